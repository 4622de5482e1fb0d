"""Two workers on net_pcap ports of two queues each, every frame placed on
the queue the test chooses (tests/queues.py): each flow's replies arrive
on the queue of the worker that does not own the flow, and half its client
frames too.  Both must reach the owner and be translated through its flow.

Worker i polls queue i of each port; a flow's owner is a function of its
client address (lbcheck.steering_owner, checked against the C function).
The tests run in order on one rplb: flows opened first, then replies, a
SIGHUP that adds a backend, a drain, a removal."""

import collections
import ipaddress
import json
import os
import random
import signal

import pytest
import yaml
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from lbcheck import assert_checksums_valid, expected_backend, steering_owner
from queues import QueueWire, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="veth pairs need root")

VIP, VPORT = "10.0.0.100", 80
MAGLEV_SIZE = 251
BACKENDS = ["192.168.1.10", "192.168.1.11", "192.168.1.12"]
ADDED = "192.168.1.13"
WORKERS = 2
FRONTEND, BACKEND = 0, 1


def service(backends):
    """backends: {ip: weight}."""
    return {"name": "web", "vip": VIP, "proto": "tcp", "port": VPORT,
            "backends": [{"ip": ip, "port": 8080, "weight": w} for ip, w in backends.items()]}


def write_config(path, backends):
    # Timeouts far longer than the module runs: a flow opened by a SYN only
    # must not expire between two tests.
    path.write_text(yaml.safe_dump({"maglev_table_size": MAGLEV_SIZE, "flow_table_size": 4096,
                                    "timeouts": {"tcp": 600, "tcp_syn": 600, "tcp_fin": 600,
                                                 "udp": 600},
                                    "services": [service(backends)]}))


def clients(per_worker=4):
    """Client addresses, per_worker owned by each worker, by owner."""
    owned = {w: [] for w in range(WORKERS)}
    for last in range(1, 255):
        ip = f"198.51.100.{last}"
        owner = steering_owner(ip, WORKERS)
        if len(owned[owner]) < per_worker:
            owned[owner].append(ip)
    return owned


def other(worker):
    return (worker + 1) % WORKERS


class Flow:
    def __init__(self, client, port, owner):
        self.client, self.port, self.owner = client, port, owner
        self.backend = None         # ip its frames go to, once seen

    def to_vip(self, flags):
        return bytes(Ether(src="02:00:00:00:00:c1", dst="02:00:00:00:00:1b")
                     / IP(src=self.client, dst=VIP, ttl=60) / TCP(sport=self.port, dport=VPORT,
                                                                  flags=flags, seq=1000))

    def reply(self, flags="SA"):
        return bytes(Ether(src="02:00:00:00:00:5e", dst="02:00:00:00:00:1b")
                     / IP(src=self.backend, dst=self.client, ttl=64)
                     / TCP(sport=8080, dport=self.port, flags=flags, seq=5000, ack=1001))


class Bench:
    """The running rplb, its wire and what the tests learned so far."""

    def __init__(self, wire, config):
        self.wire, self.config = wire, config
        self.flows = []
        self.next_port = 20000

    def stats(self):
        from rplb.control.client import request
        reply = request(str(self.wire.tmp / "rplb.sock"), {"cmd": "stats"})
        assert reply["ok"], reply
        return reply["stats"]

    def rplbctl(self, *args):
        import subprocess
        import sys
        out = subprocess.run([sys.executable, "-m", "rplb.ctl", "--socket",
                              str(self.wire.tmp / "rplb.sock"), *args],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def new_flows(self, per_client=3):
        flows = []
        for owner, ips in clients().items():
            for ip in ips:
                for _ in range(per_client):
                    flows.append(Flow(ip, self.next_port, owner))
                    self.next_port += 1
        return flows

    def send_to_vip(self, flows, flags):
        """Each flow's client frame: on its owner's queue for half the
        flows, on the other worker's for the other half."""
        for i, flow in enumerate(flows):
            queue = flow.owner if i % 2 else other(flow.owner)
            self.wire.send(FRONTEND, queue, [flow.to_vip(flags)])

    def backend_frames_of(self, flows, before):
        """Wait for one more frame per flow out of the backend port (before:
        its sent_counts before they were sent); returns {(client, port):
        packet} of the new ones, checksums checked."""
        frames = wait_until(
            lambda: (lambda f: f if len(f) >= len(flows) else None)(
                self.wire.sent_since(BACKEND, before)),
            f"{len(flows)} frames out of the backend port")
        assert len(frames) == len(flows)
        by_flow = {}
        for frame in frames:
            packet = Ether(frame)
            by_flow[(packet[IP].src, packet[TCP].sport)] = packet
            assert_checksums_valid(frame)
        assert len(by_flow) == len(flows)
        return by_flow


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workers")
    wire = QueueWire(tmp)
    config = tmp / "services.yaml"
    write_config(config, dict.fromkeys(BACKENDS, 1))
    try:
        wire.create()
        wire.start_rplb(config, "0@(0,1),1@0,2@1")
        yield Bench(wire, config)
    finally:
        exit_status = wire.destroy()
    assert exit_status == 0
    stats = json.loads((tmp / "stats.json").read_text())
    # Every mbuf came back, the frames handed between workers included.
    assert stats["mbufs_in_use_at_exit"] == 0
    assert_workers_sum_to_totals(stats)


def assert_workers_sum_to_totals(stats):
    workers = stats["workers"]
    assert len(workers) == WORKERS
    for group in ("drops", "events"):
        for name, total in stats[group].items():
            assert sum(w[group][name] for w in workers) == total, (group, name)
    for side in range(2):
        for name, total in stats["port"][side].items():
            assert sum(w["port"][side][name] for w in workers) == total, (side, name)


def test_the_software_owner_of_an_address_is_the_c_function_s():
    from rplb.dataplane import steering_owner as c_owner
    rng = random.Random(18)
    for _ in range(2000):
        ip = str(ipaddress.IPv4Address(rng.getrandbits(32)))
        for workers in (2, 3, 4, 7, 64):
            assert c_owner(ip, workers) == steering_owner(ip, workers), (ip, workers)
    # The shares of a table of 512 entries over 3 workers: 171, 171, 170.
    counts = collections.Counter(steering_owner(f"10.{i >> 8}.{i & 255}.1", 3)
                                 for i in range(30000))
    assert all(abs(n / 30000 - 1 / 3) < 0.02 for n in counts.values()), counts


def test_replies_on_the_other_workers_queue_are_translated_through_their_flow(bench):
    flows = bench.flows = bench.new_flows()
    bench.send_to_vip(flows, "S")
    out = bench.backend_frames_of(flows, [0, 0])
    for flow in flows:
        packet = out[(flow.client, flow.port)]
        flow.backend = packet[IP].dst
        assert (flow.backend, packet[TCP].dport) == expected_backend(
            service(dict.fromkeys(BACKENDS, 1)), flow.client, flow.port, MAGLEV_SIZE)
    stats = bench.stats()
    per_worker = [w["events"] for w in stats["workers"]]
    # Each worker created the flows of its own clients, whichever queue
    # their SYN came in on.
    for worker, events in enumerate(per_worker):
        assert events["flows_created"] == sum(f.owner == worker for f in flows)

    # Every reply on the queue of the worker that does not own its flow.
    for flow in flows:
        bench.wire.send(BACKEND, other(flow.owner), [flow.reply()])
    frames = wait_until(lambda: (lambda f: f if len(f) >= len(flows) else None)(
        bench.wire.sent_since(FRONTEND, [0, 0])), "the replies out of the frontend port")
    assert len(frames) == len(flows)
    seen = set()
    for frame in frames:
        assert_checksums_valid(frame)
        packet = Ether(frame)
        assert (packet[IP].src, packet[TCP].sport) == (VIP, VPORT)
        assert packet[TCP].flags == "SA" and packet[IP].ttl == 64
        seen.add((packet[IP].dst, packet[TCP].dport))
    assert seen == {(f.client, f.port) for f in flows}
    stats = bench.stats()
    events = stats["events"]
    # Through their flow, not statelessly, each by its owner.
    assert events["to_client_by_flow"] == len(flows)
    assert events["to_client_stateless"] == 0
    for worker, w in enumerate(stats["workers"]):
        mine = sum(f.owner == worker for f in flows)
        assert w["events"]["to_client_by_flow"] == mine
        # It received the other's replies (all) and half the other's SYNs.
        assert w["events"]["handoff_sent"] == len(flows) - mine + (len(flows) - mine) // 2
        assert w["flows"] == mine
    assert events["handoff_sent"] == events["handoff_received"]
    assert stats["drops"]["handoff_full"] == 0
    assert_workers_sum_to_totals(stats)


def test_affinity_survives_a_sighup_that_adds_a_backend(bench):
    flows = bench.flows
    write_config(bench.config, dict.fromkeys(BACKENDS + [ADDED], 1))
    bench.wire.rplb.signal(signal.SIGHUP)
    assert "reloaded" in bench.wire.rplb.wait_for_stderr("SIGHUP")
    new_service = service(dict.fromkeys(BACKENDS + [ADDED], 1))
    # The new Maglev table would move some of the flows: they must not.
    moved_by_maglev = [f for f in flows if expected_backend(
        new_service, f.client, f.port, MAGLEV_SIZE)[0] != f.backend]
    assert moved_by_maglev
    before = bench.wire.sent_counts(BACKEND)
    bench.send_to_vip(flows, "A")
    out = bench.backend_frames_of(flows, before)
    for flow in flows:
        assert out[(flow.client, flow.port)][IP].dst == flow.backend
    # New flows, on both workers, follow the new table (the added backend).
    fresh = bench.new_flows(per_client=4)
    before = bench.wire.sent_counts(BACKEND)
    bench.send_to_vip(fresh, "S")
    out = bench.backend_frames_of(fresh, before)
    for flow in fresh:
        flow.backend = out[(flow.client, flow.port)][IP].dst
        assert (flow.backend, 8080) == expected_backend(new_service, flow.client, flow.port,
                                                        MAGLEV_SIZE)
    assert {f.backend for f in fresh if f.owner == 0} & {f.backend for f in fresh
                                                         if f.owner == 1} >= {ADDED}
    bench.flows = flows + fresh


def test_a_drain_acts_on_every_worker(bench):
    drained = BACKENDS[0]
    on_drained = [f for f in bench.flows if f.backend == drained]
    assert {f.owner for f in on_drained} == {0, 1}      # flows on it on both workers
    bench.rplbctl("backend", "set-weight", "web", f"{drained}:8080", "0")
    # Its flows stay on it, on both workers ...
    before = bench.wire.sent_counts(BACKEND)
    bench.send_to_vip(on_drained, "A")
    out = bench.backend_frames_of(on_drained, before)
    assert all(out[(f.client, f.port)][IP].dst == drained for f in on_drained)
    # ... and no worker gives it a new flow.
    fresh = bench.new_flows(per_client=5)
    before = bench.wire.sent_counts(BACKEND)
    bench.send_to_vip(fresh, "S")
    out = bench.backend_frames_of(fresh, before)
    weights = {**dict.fromkeys(BACKENDS + [ADDED], 1), drained: 0}
    for flow in fresh:
        flow.backend = out[(flow.client, flow.port)][IP].dst
        assert flow.backend != drained
        assert (flow.backend, 8080) == expected_backend(service(weights), flow.client,
                                                        flow.port, MAGLEV_SIZE)
    bench.flows += fresh


def test_a_removal_acts_on_every_worker(bench):
    removed = BACKENDS[1]
    on_removed = [f for f in bench.flows if f.backend == removed]
    assert {f.owner for f in on_removed} == {0, 1}
    moved_before = [w["events"]["flows_moved"] for w in bench.stats()["workers"]]
    bench.rplbctl("backend", "del", "web", f"{removed}:8080")
    before = bench.wire.sent_counts(BACKEND)
    bench.send_to_vip(on_removed, "A")
    out = bench.backend_frames_of(on_removed, before)
    weights = {**dict.fromkeys([BACKENDS[0], BACKENDS[2], ADDED], 1), BACKENDS[0]: 0}
    for flow in on_removed:
        moved_to = out[(flow.client, flow.port)][IP].dst
        assert moved_to != removed
        assert (moved_to, 8080) == expected_backend(service(weights), flow.client, flow.port,
                                                    MAGLEV_SIZE)
    # Each worker moved its own flows.
    stats = bench.stats()
    for worker, w in enumerate(stats["workers"]):
        assert w["events"]["flows_moved"] - moved_before[worker] == sum(
            f.owner == worker for f in on_removed)
    assert_workers_sum_to_totals(stats)
    text = bench.rplbctl("stats")
    assert "2 workers, steering in software:" in text
