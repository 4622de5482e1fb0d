"""Under load: traffic at full speed while the backend set changes.

Established flows replay forever (net_pcap infinite_rx → net_null); through
the control socket one backend is removed and added back in turn, and a
stable backend is re-weighted.  At the end: no crash, every mbuf back, no
memory growth, and no flow ever left a backend that stayed configured.

CI runs a short version.  The long one (10 minutes):

    RPLB_SOAK_SECONDS=600 pytest tests/test_soak.py
"""

import json
import os
import time

import yaml
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from harness import LiveRplb, eal_args, file_prefix, write_pcap
from rplb.control import request

SECONDS = float(os.environ.get("RPLB_SOAK_SECONDS", "8"))
STABLE = ["192.168.1.10", "192.168.1.11", "192.168.1.12"]
TOGGLED = "192.168.1.13"
FLOWS = 2000


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def wait_until(what, predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


def live_stats(sock) -> dict:
    return request(sock, {"cmd": "stats"})["stats"]


def start_at_full_speed(tmp_path, frames, backends, flow_table_size):
    """rplb replaying frames forever (net_pcap infinite_rx) into net_null,
    with service web on 10.0.0.100:80 over backends (port 8080)."""
    source = write_pcap(tmp_path / "flows.pcap", frames)
    config = tmp_path / "services.yaml"
    config.write_text(yaml.safe_dump({"flow_table_size": flow_table_size, "services": [
        {"name": "web", "vip": "10.0.0.100", "proto": "tcp", "port": 80,
         "backends": [{"ip": ip, "port": 8080} for ip in backends]}]}))
    sock = str(tmp_path / "rplb.sock")
    prefix = file_prefix()
    live = LiveRplb([*eal_args(prefix, [f"net_pcap0,rx_pcap={source},infinite_rx=1",
                                        "net_null0,no-rx=1"]),
                     "--", "--config", str(config), "--control-socket", sock,
                     "--stats-json", str(tmp_path / "stats.json")], prefix, cwd=tmp_path)
    return live, sock


def test_backend_changes_every_second_at_full_speed(tmp_path):
    frames = [Ether() / IP(src=f"198.18.{i // 250}.{i % 250 + 1}", dst="10.0.0.100")
              / TCP(sport=1024 + i, dport=80, flags="A") for i in range(FLOWS)]
    live, sock = start_at_full_speed(tmp_path, frames, STABLE + [TOGGLED], 8192)
    changes = 0
    try:
        live.wait_for_stderr("forwarding with")
        wait_until("every flow is in the table",
                   lambda: live_stats(sock)["events"]["flows_created"] >= FLOWS)
        rss_start = rss_kib(live.proc.pid)
        deadline = time.monotonic() + SECONDS
        present = True
        while time.monotonic() < deadline:
            if present:
                req = {"cmd": "backend.del", "service": "web", "ip": TOGGLED, "port": 8080}
            else:
                req = {"cmd": "backend.add", "service": "web", "ip": TOGGLED, "port": 8080,
                       "weight": 1}
            assert request(sock, req)["ok"]
            present = not present
            assert request(sock, {"cmd": "backend.set-weight", "service": "web",
                                  "ip": STABLE[0], "port": 8080,
                                  "weight": 1 + changes % 5})["ok"]
            changes += 1
            assert live.proc.poll() is None, "rplb died"
            time.sleep(1.0)          # the pace of the soak: one change a second
        rss_end = rss_kib(live.proc.pid)
    finally:
        rc, _ = live.stop()
    assert rc == 0, live.stderr_lines[-10:]
    assert changes >= SECONDS // 2
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["mbufs_in_use_at_exit"] == 0
    assert rss_end - rss_start < 32 * 1024, (rss_start, rss_end)
    assert stats["port"][0]["rx_packets"] > FLOWS * 10           # it really ran at speed
    assert stats["events"]["flows_expired"] == 0
    # Flows only left the toggled backend: for the stable ones, what was
    # created plus what moved in is what is still there.
    web = stats["services"][0]
    stable = [b for b in web["backends"] if b["backend"].split(":")[0] in STABLE]
    assert len(stable) == 3
    ended_on_stable = (sum(b["new_flows"] for b in stable) + stats["events"]["flows_moved"]
                       - sum(b["active_flows"] for b in stable))
    assert ended_on_stable == 0
    assert stats["events"]["flows_moved"] > 0


def test_all_backends_removed_under_load(tmp_path):
    """Every backend of the service removed while traffic runs at full speed:
    established flows lose their backend, so their packets are dropped and
    counted as no_backend; nothing crashes or leaks, and adding a backend
    back makes traffic flow again."""
    frames = [Ether() / IP(src=f"198.19.0.{i + 1}", dst="10.0.0.100")
              / TCP(sport=2000 + i, dport=80, flags="A") for i in range(200)]
    live, sock = start_at_full_speed(tmp_path, frames, STABLE, 4096)

    try:
        live.wait_for_stderr("forwarding with")
        wait_until("every flow is in the table",
                   lambda: live_stats(sock)["events"]["flows_created"] >= len(frames))
        for ip in STABLE:
            assert request(sock, {"cmd": "backend.del", "service": "web", "ip": ip,
                                  "port": 8080})["ok"]
        first = live_stats(sock)["drops"]["no_backend"]
        wait_until("packets are dropped as no_backend",              # dropped, counted
                   lambda: live_stats(sock)["drops"]["no_backend"] > first)
        assert request(sock, {"cmd": "backend.add", "service": "web", "ip": STABLE[0],
                              "port": 8080})["ok"]
        sent = live_stats(sock)["events"]["to_backend"]
        wait_until("packets flow to the backend again",             # flowing again
                   lambda: live_stats(sock)["events"]["to_backend"] > sent)
        assert live.proc.poll() is None
    finally:
        rc, _ = live.stop()
    assert rc == 0
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["mbufs_in_use_at_exit"] == 0
    assert stats["events"]["flows_moved"] > 0
