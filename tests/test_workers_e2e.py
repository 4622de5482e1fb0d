"""Two workers with real clients: curl and ping in one namespace, HTTP
servers in another, rplb between them on net_af_packet ports of two queue
pairs each, started with the very EAL options of issue 18:

    rplb-dpdk --no-huge -m 1024 --no-pci --lcores 0@0,1@0,2@1 --file-prefix X \\
      --vdev net_af_packet0,iface=A,qpairs=2,framecnt=8192 \\
      --vdev net_af_packet1,iface=B,qpairs=2,framecnt=8192 -- --ports 0,1 --config F

The kernel spreads each port's frames over its two queues by its own flow
hash (PACKET_FANOUT), which puts a request and its reply on different
queues as often as not: the workers must hand frames to each other.

A flow's owner is a function of its client's address alone, so the client
namespace has several addresses, owned by either worker."""

import collections
import hashlib
import json
import math
import os
import subprocess
import sys

import pytest
import yaml

from harness import LiveRplb, file_prefix
from netns import Topology

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

WEIGHTS = {"192.168.1.10": 10, "192.168.1.11": 5, "192.168.1.12": 1}
NAMES = {"192.168.1.10": "backend1", "192.168.1.11": "backend2", "192.168.1.12": "backend3"}
CURLS = 400


def client_addresses(per_worker: int = 4):
    """Client addresses, per_worker of them owned by each of the two workers."""
    from rplb.dataplane import steering_owner
    owned = {0: [], 1: []}
    for last in range(3, 255):
        ip = f"203.0.113.{last}"
        owner = owned[steering_owner(ip, 2)]
        if len(owner) < per_worker:
            owner.append(ip)
    return owned[0] + owned[1]


CLIENTS = client_addresses()


@pytest.fixture(scope="module")
def wire(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workers")
    topo = Topology(tmp, str(os.getpid()))
    config = tmp / "services.yaml"
    config.write_text(yaml.safe_dump({"flow_table_size": 65536, "services": [
        {"name": "web", "vip": "10.0.0.100", "proto": "tcp", "port": 80,
         "backends": [{"ip": ip, "port": 8080, "weight": w} for ip, w in WEIGHTS.items()]}]}))
    try:
        topo.create()
        topo.add_client_addresses(CLIENTS)
        topo.start_servers(blob_mb=20)
        prefix = file_prefix()
        topo.rplb = LiveRplb([
            "--no-huge", "-m", "1024", "--no-pci", "--lcores", "0@0,1@0,2@1",
            "--file-prefix", prefix,
            "--vdev", f"net_af_packet0,iface={topo.c1},qpairs=2,framecnt=8192",
            "--vdev", f"net_af_packet1,iface={topo.s1},qpairs=2,framecnt=8192",
            "--", "--ports", "0,1", "--config", str(config),
            "--stats-json", str(tmp / "stats.json"), "--control-socket", str(tmp / "rplb.sock")],
            prefix, cwd=tmp)
        topo.rplb.wait_for_stderr("forwarding with")
        yield topo
    finally:
        exit_status = topo.destroy()
    assert exit_status == 0
    stats = json.loads((tmp / "stats.json").read_text())
    # Every mbuf came back, frames handed over included; the per-worker
    # counters add up to the totals.
    assert stats["mbufs_in_use_at_exit"] == 0
    assert [w["lcore"] for w in stats["workers"]] == [1, 2]
    for group in ("drops", "events"):
        for name, total in stats[group].items():
            assert sum(w[group][name] for w in stats["workers"]) == total, (group, name)
    for side in range(2):
        for name, total in stats["port"][side].items():
            assert sum(w["port"][side][name] for w in stats["workers"]) == total
    assert stats["drops"]["handoff_full"] == 0


def rplbctl(wire, *args):
    out = subprocess.run([sys.executable, "-m", "rplb.ctl", "--socket",
                          str(wire.tmp / "rplb.sock"), *args],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_each_port_has_two_queue_pairs_and_steers_in_software(wire):
    lines = wire.rplb.stderr_lines      # start-up's lines: the fixture waited for them
    for port in (0, 1):
        assert any(f"port {port} (net_af_packet{port}, net_af_packet): tx checksum offload "
                   "off, 2 queue pairs" in line for line in lines), lines
    # net_af_packet has no rte_flow: software steering, said for each port.
    assert ("rplb-dpdk: steering to 2 workers: port 0 (net_af_packet0, frontend): software "
            "(the port refused rte_flow RSS by the client's source address: Function not "
            "implemented)") in lines
    assert ("rplb-dpdk: steering to 2 workers: port 1 (net_af_packet1, backend): software "
            "(port 0 cannot steer in hardware, and both ports must)") in lines
    assert any("forwarding with the lb engine on lcores 1, 2," in line for line in lines)


def test_ping_the_vip(wire):
    out = wire.client("ping", "-c", "5", "-i", "0.2", "-W", "2", "10.0.0.100")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "5 received" in out.stdout


def test_400_curls_follow_the_weights_and_none_fails(wire):
    # One curl per client address, at once, CURLS in all: the HTTP/1.0
    # servers close every connection, so each transfer is a new connection
    # from a new client port.
    url = "http://10.0.0.100/"
    per_client = CURLS // len(CLIENTS)
    curls = [wire.client_popen("curl", "-s", "-m", "10", "--interface", ip,
                               "-w", "%{http_code}\\n", *([url] * per_client),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for ip in CLIENTS]
    names, codes = [], []
    for curl in curls:
        out, err = curl.communicate(timeout=300)
        assert curl.returncode == 0, err
        lines = out.split()
        names += lines[0::2]
        codes += lines[1::2]
    assert codes == ["200"] * CURLS, collections.Counter(codes)
    counts = collections.Counter(names)
    assert sum(counts.values()) == CURLS and set(counts) <= set(NAMES.values()), counts
    total = sum(WEIGHTS.values())
    for ip, weight in WEIGHTS.items():
        want = weight / total
        # Each connection a new client port: a backend's count is binomial;
        # 4.5 standard deviations (the weight-1 backend's is 1.2 % of 400).
        bound = 4.5 * math.sqrt(want * (1 - want) / CURLS)
        assert abs(counts[NAMES[ip]] / CURLS - want) <= bound, (counts, ip)


def test_20_mb_download_is_byte_exact(wire):
    want = hashlib.sha256(wire.blob.read_bytes()).hexdigest()
    download = wire.tmp / "download.bin"
    out = wire.client("curl", "-s", "-m", "120", "--interface", CLIENTS[-1], "-o",
                      str(download), "http://10.0.0.100/blob", timeout=130)
    assert out.returncode == 0, out.stderr
    assert hashlib.sha256(download.read_bytes()).hexdigest() == want


def test_both_workers_forwarded_and_handed_frames_to_each_other(wire):
    stats = json.loads(rplbctl(wire, "stats", "--json"))
    workers = stats["workers"]
    assert len(workers) == 2
    for worker in workers:
        # Each owns half the client addresses: it created and forwarded
        # flows both ways, and the kernel's fanout put frames of the other
        # worker's clients on its queues, which it handed over.
        events = worker["events"]
        assert events["flows_created"] >= CURLS // 2, worker
        assert events["to_backend"] > 0 and events["to_client_by_flow"] > 0, worker
        assert events["handoff_sent"] > 0 and events["handoff_received"] > 0, worker
        assert worker["flows"] > 0
        for side in range(2):
            assert worker["port"][side]["rx_packets"] > 0, worker
            assert worker["port"][side]["tx_packets"] > 0, worker
    assert stats["events"]["handoff_sent"] == stats["events"]["handoff_received"]
    # Every reply found its flow, whichever queue it came in on.
    assert stats["events"]["to_client_stateless"] == 0
    text = rplbctl(wire, "stats")
    assert "2 workers, steering in software:" in text
    assert "lcore 1 (queue 0)" in text and "lcore 2 (queue 1)" in text
