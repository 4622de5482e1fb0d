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

from harness import eal_args, file_prefix, read_pcap, remove_runtime_dir, run_cli, write_pcap
from lbcheck import assert_checksums_valid, expected_backend, steering_owner
from queues import QueueWire, wait_until


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
    if os.geteuid() != 0:
        pytest.skip("veth pairs need root")
    tmp = tmp_path_factory.mktemp("workers")
    wire = QueueWire(tmp)
    config = tmp / "services.yaml"
    write_config(config, dict.fromkeys(BACKENDS, 1))
    from test_observability import free_port
    prometheus = free_port()
    try:
        wire.create()
        wire.start_rplb(config, "0@(0,1),1@0,2@1", "--prometheus", f":{prometheus}")
        bench = Bench(wire, config)
        bench.prometheus = f"http://127.0.0.1:{prometheus}/metrics"
        yield bench
    finally:
        exit_status = wire.destroy()
    assert exit_status == 0
    stats = json.loads((tmp / "stats.json").read_text())
    # Every mbuf came back, the frames handed between workers included.
    assert stats["mbufs_in_use_at_exit"] == 0
    assert_workers_sum_to_totals(stats)


def assert_workers_sum_to_totals(stats, count=WORKERS):
    workers = stats["workers"]
    assert len(workers) == count
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
    for worker, w in zip((0, 1), stats["workers"]):
        assert (f"lcore {w['lcore']} (queue {worker}): frontend rx {w['port'][0]['rx_packets']} "
                f"tx {w['port'][0]['tx_packets']}") in text


def test_per_worker_counters_in_prometheus_telemetry_and_flow_samples(bench):
    import socket
    import urllib.request
    from exposition import metric, parse
    # Nothing moves now: the three views see the same counters.
    stats = bench.stats()
    with urllib.request.urlopen(bench.prometheus, timeout=10) as reply:
        prom = parse(reply.read().decode())
    roles = ("frontend", "backend")
    for w in stats["workers"]:
        for side, role in enumerate(roles):
            for key, value in w["port"][side].items():
                assert metric(prom, f"rplb_worker_port_{key}_total", worker=w["lcore"],
                              port=side, role=role) == value
        for event, value in w["events"].items():
            assert metric(prom, "rplb_worker_events_total", worker=w["lcore"],
                          event=event) == value
        for reason, value in w["drops"].items():
            assert metric(prom, "rplb_worker_drops_total", worker=w["lcore"],
                          reason=reason) == value
        assert metric(prom, "rplb_worker_flows", worker=w["lcore"]) == w["flows"]
    # The totals are families of their own: a sum over a per-worker family
    # is the total.
    for event, value in stats["events"].items():
        assert metric(prom, "rplb_events_total", event=event) == value
        assert sum(metric(prom, "rplb_worker_events_total", worker=w["lcore"], event=event)
                   for w in stats["workers"]) == value

    path = f"/var/run/dpdk/{bench.wire.rplb.prefix}/dpdk_telemetry.v2"

    def telemetry():
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.settimeout(10)
            s.connect(path)
            json.loads(s.recv(16384))                       # the greeting
            s.send(b"/rplb/stats")
            return json.loads(s.recv(65536))["/rplb/stats"]

    # Published every 0.5 s: until a publish came after the last frame.  A
    # publish may be older than the stats above by a frame a worker kept
    # (handoff_sent already final, rx_packets not: seen once in CI), so
    # wait for every counter compared below.
    def caught_up(t):
        return all(t.get(f"worker_{w['lcore']}", {}).get(key) == value
                   for w in stats["workers"]
                   for key, value in (("handoff_sent", w["events"]["handoff_sent"]),
                                      ("handoff_received", w["events"]["handoff_received"]),
                                      ("frontend/rx_packets", w["port"][0]["rx_packets"]),
                                      ("backend/tx_packets", w["port"][1]["tx_packets"])))

    published = wait_until(lambda: (lambda t: t if caught_up(t) else None)(telemetry()),
                           "telemetry's per-worker counters")
    for q, w in enumerate(stats["workers"]):
        group = published[f"worker_{w['lcore']}"]
        assert group["queue"] == q
        assert group["frontend/rx_packets"] == w["port"][0]["rx_packets"]
        assert group["backend/tx_packets"] == w["port"][1]["tx_packets"]
        assert group["handoff_received"] == w["events"]["handoff_received"]
        assert group["flows"] == w["flows"]

    # rplbctl flows: samples from every worker, each from the worker that
    # owns its client.
    reply = json.loads(bench.rplbctl("flows", "--json"))
    lcore_of = {q: w["lcore"] for q, w in enumerate(stats["workers"])}
    sampled = collections.Counter()
    for flow in reply["sample"]:
        client = flow["client"].split(":")[0]
        assert flow["lcore"] == lcore_of[steering_owner(client, WORKERS)], flow
        sampled[flow["lcore"]] += 1
    assert set(sampled) == set(lcore_of.values())


def open_flows(bench, per_client=1):
    """New flows of both workers' clients, each opened by a SYN on its
    owner's queue; their backends learned from what left."""
    flows = bench.new_flows(per_client=per_client)
    before = bench.wire.sent_counts(BACKEND)
    for flow in flows:
        bench.wire.send(FRONTEND, flow.owner, [flow.to_vip("S")])
    out = bench.backend_frames_of(flows, before)
    for flow in flows:
        flow.backend = out[(flow.client, flow.port)][IP].dst
    return flows


def frames_out(bench, port, before, count, what):
    return wait_until(lambda: (lambda f: f if len(f) >= count else None)(
        bench.wire.sent_since(port, before)), what)


def deltas(before, after, group, name):
    """Per worker, how much a counter grew."""
    return [a[group][name] - b[group][name] for b, a in zip(before["workers"], after["workers"])]


def test_fragments_of_a_datagram_reach_its_flows_worker_from_any_queue(bench):
    """Steering by the client address alone brings every fragment of a
    datagram to the worker that holds its flow, though only the first
    carries the ports: here each datagram's fragments arrive on both
    workers' queues, the last first (held by the owner until the first
    comes), in both directions, and are translated by the flow."""
    from scapy.layers.inet import fragment
    from scapy.packet import Raw
    from test_fragments import assert_fragment_ipv4, l4_checksum_ok, reassemble
    flows = open_flows(bench)
    start = bench.stats()

    def spread(flow, datagram, port):
        # Fragments sent last first: the 2nd and 0th (the first) on the
        # other worker's queue, the 1st on the owner's.
        pieces = [bytes(Ether(src="02:00:00:00:00:c1", dst="02:00:00:00:00:1b") / f)
                  for f in fragment(datagram, fragsize=480)]
        assert len(pieces) == 3
        for position, index in enumerate((2, 1, 0)):
            queue = other(flow.owner) if position % 2 == 0 else flow.owner
            bench.wire.send(port, queue, [pieces[index]])
        return pieces

    payload = bytes(i * 13 & 0xFF for i in range(1200))
    requests = {}
    before = bench.wire.sent_counts(BACKEND)
    for i, flow in enumerate(flows):
        requests[0x4000 + i] = flow, spread(flow, IP(src=flow.client, dst=VIP, id=0x4000 + i)
                                            / TCP(sport=flow.port, dport=VPORT, flags="PA",
                                                  seq=1001, ack=5001) / Raw(payload), FRONTEND)
    out = frames_out(bench, BACKEND, before, 3 * len(flows), "the requests' fragments")
    assert len(out) == 3 * len(flows)
    for ip_id, (flow, sent) in requests.items():
        mine = [f for f in out if Ether(f)[IP].id == ip_id]
        assert len(mine) == 3
        sent_at = {Ether(f)[IP].frag: f for f in sent}
        for frame in mine:
            assert_fragment_ipv4(frame, sent_at[Ether(frame)[IP].frag], dst=flow.backend)
        first, data = reassemble(mine)
        assert (first.dst, TCP(data[:20]).dport, TCP(data[:20]).sport) == \
            (flow.backend, 8080, flow.port)
        assert l4_checksum_ok(first, 6, data) and data[20:] == payload

    replies = {}
    before = bench.wire.sent_counts(FRONTEND)
    for i, flow in enumerate(flows):
        replies[0x5000 + i] = flow, spread(flow, IP(src=flow.backend, dst=flow.client,
                                                    id=0x5000 + i)
                                           / TCP(sport=8080, dport=flow.port, flags="PA",
                                                 seq=5001, ack=2201) / Raw(payload), BACKEND)
    out = frames_out(bench, FRONTEND, before, 3 * len(flows), "the replies' fragments")
    assert len(out) == 3 * len(flows)
    for ip_id, (flow, sent) in replies.items():
        mine = [f for f in out if Ether(f)[IP].id == ip_id]
        assert len(mine) == 3
        sent_at = {Ether(f)[IP].frag: f for f in sent}
        for frame in mine:
            assert_fragment_ipv4(frame, sent_at[Ether(frame)[IP].frag], src=VIP)
        first, data = reassemble(mine)
        assert (first.src, TCP(data[:20]).sport, TCP(data[:20]).dport) == \
            (VIP, VPORT, flow.port)
        assert l4_checksum_ok(first, 6, data) and data[20:] == payload

    stats = bench.stats()
    owned = [sum(f.owner == w for f in flows) for w in range(WORKERS)]
    # Each owner held the two fragments before each first, of both
    # directions, and translated all three by its flow.
    assert deltas(start, stats, "events", "fragments_held") == [4 * n for n in owned]
    assert deltas(start, stats, "events", "to_backend") == [3 * n for n in owned]
    assert deltas(start, stats, "events", "to_client_by_flow") == [3 * n for n in owned]
    assert deltas(start, stats, "events", "to_client_stateless") == [0, 0]
    # Each worker handed over the other's two fragments per datagram.
    assert deltas(start, stats, "events", "handoff_sent") == [4 * n for n in reversed(owned)]
    for reason in ("fragment_overlap", "fragment_duplicate", "fragment_timeout",
                   "fragment_no_room", "handoff_full"):
        assert deltas(start, stats, "drops", reason) == [0, 0], reason
    assert_workers_sum_to_totals(stats)


def test_icmp_errors_reach_the_worker_of_the_flow_they_quote(bench):
    """An error's outer addresses are a router's: it is steered by the
    client address in its quote, to the worker whose flow it is about,
    whichever queue it arrives on; there it is translated by the flow, not
    statelessly."""
    from test_icmp_errors import check_error, icmp_error, segment
    flows = open_flows(bench)
    start = bench.stats()
    router, backend_router = "203.0.113.1", "192.168.1.254"
    to_backends, to_clients = [], []
    for flow in flows:
        # A router on the clients' side: "fragmentation needed" for what
        # rplb sent the client (vip:80 -> client), on the wrong queue.
        as_sent = segment("tcp", VIP, VPORT, flow.client, flow.port)
        error = icmp_error(router, VIP, (3, 4), bytes(as_sent)[:48])
        to_backends.append((flow, error, bytes(segment("tcp", flow.backend, 8080, flow.client,
                                                       flow.port))[:48]))
        # A router on the backends' side: "time exceeded" for what rplb
        # sent the backend (client -> backend:8080).
        forwarded = segment("tcp", flow.client, flow.port, flow.backend, 8080)
        reply = icmp_error(backend_router, flow.client, (11, 0), bytes(forwarded)[:48])
        to_clients.append((flow, reply, bytes(segment("tcp", flow.client, flow.port, VIP,
                                                      VPORT))[:48]))
    before = bench.wire.sent_counts(BACKEND)
    for flow, error, _ in to_backends:
        bench.wire.send(FRONTEND, other(flow.owner), [bytes(error)])
    out = frames_out(bench, BACKEND, before, len(flows), "the errors to the backends")
    assert len(out) == len(flows)
    # By the quote's destination (the client): bytes 16-19 of the quoted
    # IPv4 header, after the outer header and ICMP's 8 bytes.
    by_client = {str(ipaddress.IPv4Address(f[14 + 20 + 8 + 16:14 + 20 + 8 + 20])): f
                 for f in out}
    for flow, error, quote in to_backends:
        check_error(by_client[flow.client], error, router, flow.backend, quote)
    before = bench.wire.sent_counts(FRONTEND)
    for flow, error, _ in to_clients:
        bench.wire.send(BACKEND, other(flow.owner), [bytes(error)])
    out = frames_out(bench, FRONTEND, before, len(flows), "the errors to the clients")
    assert len(out) == len(flows)
    by_client = {Ether(f)[IP].dst: f for f in out}
    for flow, error, quote in to_clients:
        check_error(by_client[flow.client], error, backend_router, flow.client, quote)

    stats = bench.stats()
    owned = [sum(f.owner == w for f in flows) for w in range(WORKERS)]
    assert deltas(start, stats, "events", "icmp_errors_to_backend") == owned
    assert deltas(start, stats, "events", "icmp_errors_to_client") == owned
    for name in ("icmp_errors_to_backend_stateless", "icmp_errors_to_client_stateless",
                 "icmp_errors_unmatched"):
        assert deltas(start, stats, "events", name) == [0, 0], name
    # Each worker handed over the other's two errors per flow.
    assert deltas(start, stats, "events", "handoff_sent") == [2 * n for n in reversed(owned)]
    assert_workers_sum_to_totals(stats)


def test_an_icmp_error_in_fragments_keeps_its_fragments_on_one_worker(bench):
    """An ICMP error in fragments passes unchanged (errors are at most 576
    bytes: rplb translates none in fragments), and its fragments after the
    first carry no quote: so every fragment of it, the first included, is
    steered by its outer address.  Steered by the quote, the first would
    reach the quoted client's worker and the rest the router's, where they
    would wait for a first fragment that never comes."""
    from scapy.layers.inet import fragment
    from test_icmp_errors import icmp_error, segment
    flows = open_flows(bench)
    router = next(f"203.0.113.{i}" for i in range(2, 255)
                  if steering_owner(f"203.0.113.{i}", WORKERS) != flows[0].owner)
    flow = flows[0]
    as_sent = segment("tcp", VIP, VPORT, flow.client, flow.port)
    error = icmp_error(router, VIP, (3, 4), bytes(as_sent) * 4)[IP]
    error.id = 0x6006
    pieces = [bytes(Ether(src="02:00:00:00:00:c1", dst="02:00:00:00:00:1b") / f)
              for f in fragment(IP(bytes(error)), fragsize=256)]
    assert len(pieces) == 3
    start = bench.stats()
    before = bench.wire.sent_counts(BACKEND)
    for i, piece in enumerate(pieces):
        bench.wire.send(FRONTEND, i % 2, [piece])
    out = frames_out(bench, BACKEND, before, len(pieces), "the error's fragments")
    assert sorted(out) == sorted(pieces)           # unchanged, every one
    stats = bench.stats()
    router_worker = steering_owner(router, WORKERS)
    assert deltas(start, stats, "events", "passed_through")[router_worker] == len(pieces)
    assert sum(deltas(start, stats, "events", "fragments_held")) == 0
    assert_workers_sum_to_totals(stats)


# ---- without veths: refusals, sizing, the pass-through engine -------------------

LCORES = "0@0,1@0,2@1"     # the main lcore and two workers on two CPUs


def pcap_queues(tmp_path, port, inputs):
    """net_pcap<port> with one rx_pcap (of its frames) and tx_pcap per queue."""
    args = []
    for q, frames in enumerate(inputs):
        args.append(f"rx_pcap={write_pcap(tmp_path / f'in{port}{q}.pcap', frames)}")
    for q in range(len(inputs)):
        args.append(f"tx_pcap={tmp_path / f'out{port}{q}.pcap'}")
    return f"net_pcap{port}," + ",".join(args)


def run_with(tmp_path, vdevs, *rplb_args, lcores=LCORES):
    prefix = file_prefix()
    try:
        return run_cli([*eal_args(prefix, vdevs, lcores), "--", "--duration", "1",
                        "--control-socket", "none", "--stats-json",
                        str(tmp_path / "stats.json"), *rplb_args], cwd=tmp_path)
    finally:
        remove_runtime_dir(prefix)


def test_a_port_without_a_queue_pair_per_worker_is_refused_by_name(tmp_path):
    proc = run_with(tmp_path, [pcap_queues(tmp_path, 0, [[], []]),
                               pcap_queues(tmp_path, 1, [[]])])
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("rplb-dpdk: error:")]
    assert errors == [
        "rplb-dpdk: error: port 1 (net_pcap1, net_pcap) offers at most 1 rx/tx queue pair, and "
        "2 worker lcores need 2 (one each): give it more queues (net_pcap: one rx_pcap=/"
        "rx_iface= and one tx_pcap=/tx_iface= per queue) or EAL fewer lcores"], proc.stderr


def test_check_config_sizes_the_workers_the_lcores_give(tmp_path):
    from rplb import dataplane, sizing
    config = tmp_path / "services.yaml"
    write_config(config, dict.fromkeys(BACKENDS, 1))
    prefix = file_prefix()
    proc = run_cli(["--no-huge", "--lcores", LCORES, "--file-prefix", prefix, "--",
                    "--check-config", str(config)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not os.path.exists(f"/var/run/dpdk/{prefix}"), "EAL was started"
    worker = dataplane.worker_memory(4096)
    assert (f"flow table: {sizing.mebibytes(worker)} per worker lcore (4096 flows, 4096 "
            "fragmented datagrams, counters included) x 2 workers") in proc.stdout
    assert (f"handoff rings between the workers: {sizing.mebibytes(dataplane.handoff_memory(2))} "
            "(2 rings of 4096 entries)") in proc.stdout
    # The default pool covers 2 ports x 2 queues, the rings and the
    # fragments each worker may hold.
    assert "2 ports x 2 queues x (1024 rx + 1024 tx descriptors) + 2 handoff rings x 4095" \
        in proc.stdout
    assert "+ 1024 fragments held)" in proc.stdout
    proc = run_cli(["--no-huge", "--lcores", LCORES, "--file-prefix", prefix, "--",
                    "--check-config", str(config), "--mbufs", "16383"], cwd=tmp_path)
    assert proc.returncode == 1 and "--mbufs 16383 is too few" in proc.stderr


def test_the_pass_through_engine_forwards_each_queue_on_its_worker(tmp_path):
    """Without --config nothing keeps state: the workers steer nothing, each
    forwards its own queues unchanged."""
    inputs = {(p, q): [bytes(Ether() / IP(src=f"198.51.100.{10 * p + q + 1}", dst="10.0.0.1")
                             / TCP(sport=1000 + i, dport=80)) for i in range(20 + 5 * q)]
              for p in (0, 1) for q in (0, 1)}
    proc = run_with(tmp_path, [pcap_queues(tmp_path, p, [inputs[p, 0], inputs[p, 1]])
                               for p in (0, 1)])
    assert proc.returncode == 0, proc.stderr
    assert "steering to" not in proc.stderr
    for p in (0, 1):
        for q in (0, 1):
            assert read_pcap(tmp_path / f"out{1 - p}{q}.pcap") == inputs[p, q]
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["mbufs_in_use_at_exit"] == 0
    assert "steering" not in stats
    for q, worker in enumerate(stats["workers"]):
        assert worker["queue"] == q and worker["port"][0]["rx_packets"] == 20 + 5 * q
        assert worker["events"]["passed_through"] == 2 * (20 + 5 * q)
        assert worker["events"]["handoff_sent"] == 0
    assert_workers_sum_to_totals(stats)


def test_three_workers_translate_every_reply_on_the_next_workers_queue(tmp_path):
    """Three workers (an indirection table of 512 entries they do not
    divide), from files: each worker's queue holds the SYNs of the flows
    it owns, and the replies of the flows the previous worker owns.  A
    worker processes its own rx before what is handed to it, and its SYNs
    fit one rx burst, so every flow exists before its reply arrives: each
    reply goes through its flow, on its owner."""
    workers = 3
    svc = service(dict.fromkeys(BACKENDS, 1))
    flows = [Flow(f"203.0.113.{i}", 30000 + i, steering_owner(f"203.0.113.{i}", workers))
             for i in range(1, 91)]
    for flow in flows:
        flow.backend = expected_backend(svc, flow.client, flow.port, MAGLEV_SIZE)[0]
    assert {f.owner for f in flows} == {0, 1, 2} and all(
        sum(f.owner == w for f in flows) <= 64 for w in range(workers))
    syns = [[f.to_vip("S") for f in flows if f.owner == q] for q in range(workers)]
    replies = [[f.reply() for f in flows if f.owner == (q - 1) % workers]
               for q in range(workers)]
    config = tmp_path / "services.yaml"
    write_config(config, dict.fromkeys(BACKENDS, 1))
    proc = run_with(tmp_path, [pcap_queues(tmp_path, 0, syns), pcap_queues(tmp_path, 1, replies)],
                    "--config", str(config), lcores="0@(0,1),1@0,2@1,3@0")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["mbufs_in_use_at_exit"] == 0
    assert stats["events"]["to_client_by_flow"] == len(flows)
    assert stats["events"]["to_client_stateless"] == 0
    for q, worker in enumerate(stats["workers"]):
        mine = [f for f in flows if f.owner == q]
        assert worker["events"]["flows_created"] == len(mine)
        assert worker["events"]["to_client_by_flow"] == len(mine)
        # every reply on its queue belongs to the previous worker's flows
        assert worker["events"]["handoff_sent"] == len(replies[q])
        assert worker["events"]["handoff_received"] == len(mine)
    assert_workers_sum_to_totals(stats, workers)
    # What left: each SYN to its backend on its owner's queue, each reply
    # from the VIP, rewritten by the worker that owns it.
    for q in range(workers):
        out = [Ether(f) for f in read_pcap(tmp_path / f"out1{q}.pcap")]
        assert sorted((p[IP].src, p[TCP].sport, p[IP].dst) for p in out) == sorted(
            (f.client, f.port, f.backend) for f in flows if f.owner == q)
        back = read_pcap(tmp_path / f"out0{q}.pcap")
        for frame in back:
            assert_checksums_valid(frame)
        assert sorted((Ether(f)[IP].src, Ether(f)[TCP].sport, Ether(f)[IP].dst,
                       Ether(f)[TCP].dport) for f in back) == sorted(
            (VIP, VPORT, f.client, f.port) for f in flows if f.owner == q)
