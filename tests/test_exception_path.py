"""The exception path, frame by frame: which frames from the backend network
cross to the appliance's own kernel interface, which pass, and what the
kernel answers through the backend port (net_tap or net_pcap ports; the
kernel interface is rplb's own net_tap, in the root namespace)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw
from scapy.sendrecv import AsyncSniffer

from harness import run_rplb
from healthnet import tag
from rplb.control import request
from tapwire import TapWire

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a kernel interface needs root")

BACKEND_MAC, OTHER_MAC = "02:00:00:00:0b:0a", "02:00:00:00:0b:63"
CLIENT = "203.0.113.5"


@pytest.fixture
def net(tmp_path):
    """This test's own /24 and interface name (the root namespace is shared)."""
    n = tag()
    index = (os.getpid() * 7 + int(n[-2:])) % (64 * 256)
    prefix = f"10.{128 + index // 256}.{index % 256}"
    config = tmp_path / "services.yaml"
    config.write_text(yaml.safe_dump({
        "health_checks": {"source": f"{prefix}.2/24", "interface": f"rpx{n}"},
        "services": [{"name": "web", "vip": "10.0.0.100", "proto": "tcp", "port": 80,
                      "backends": [{"ip": f"{prefix}.10", "port": 8080}]}]}))
    return prefix, f"rpx{n}", config


def test_only_frames_for_the_appliance_cross_and_the_kernel_answers(tmp_path, net):
    """Live, on net_tap ports: the frames for the kernel must carry its MAC,
    learnt from its answer to ARP."""
    prefix, interface, config = net
    local, backend, stranger = f"{prefix}.2", f"{prefix}.10", f"{prefix}.99"
    wire = TapWire(tmp_path, rplb_args=["--config", str(config)])
    try:
        assert any(f"health checks from {local}/24 on interface {interface}" in line
                   for line in wire.rplb.stderr_lines)
        kernel_mac = Path(f"/sys/class/net/{interface}/address").read_text().strip()

        def from_backend(pkt, mac=BACKEND_MAC):
            dst = "ff:ff:ff:ff:ff:ff" if ARP in pkt and pkt[ARP].op == 1 else kernel_mac
            return Ether(src=mac, dst=dst) / pkt
        crossing = [
            # Who has the appliance's address?  (Also tells the kernel the
            # backend's MAC, which its answers below need.)
            from_backend(ARP(op=1, hwsrc=BACKEND_MAC, psrc=backend, pdst=local)),
            from_backend(IP(src=backend, dst=local) / ICMP(type=8, id=77, seq=3) / Raw(b"ping")),
            from_backend(IP(src=backend, dst=local) / TCP(sport=8080, dport=5555, flags="S")),
            from_backend(IP(src=backend, dst=local) / UDP(sport=53, dport=9) / Raw(b"?")),
            # A fragment goes too: the kernel reassembles.
            from_backend(IP(src=stranger, dst=local, flags="MF", id=9) / ICMP(type=8)
                         / Raw(b"x" * 8), OTHER_MAC),
            # An answer to the appliance's own ARP request.
            from_backend(ARP(op=2, hwsrc=OTHER_MAC, psrc=stranger, hwdst=kernel_mac,
                             pdst=local), OTHER_MAC),
        ]
        passing = [
            from_backend(ARP(op=1, hwsrc=BACKEND_MAC, psrc=backend, pdst=stranger)),
            from_backend(IP(src=stranger, dst=local, proto=47) / Raw(b"gre")),
            Raw(bytes(from_backend(ARP(op=1, psrc=backend, pdst=local)))[:30]),
            from_backend(IP(src=backend, dst=CLIENT) / TCP(sport=8080, dport=40000, flags="SA")),
        ]
        answers: list = []
        sniffer = AsyncSniffer(iface=wire.backend_if, store=False,
                               prn=lambda p: answers.append(p)
                               if Ether in p and p[Ether].src == kernel_mac else None)
        sniffer.start()
        try:
            out = wire.to_clients([*crossing, *passing], match=lambda p: True)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not (
                    any(ICMP in a and a[ICMP].type == 3 for a in answers) and
                    any(ICMP in a and a[ICMP].type == 0 for a in answers) and
                    any(TCP in a for a in answers)):
                time.sleep(0.05)
        finally:
            sniffer.stop()
        stats = request(wire.socket, {"cmd": "stats"})["stats"]
    finally:
        rc, _ = wire.stop()
    assert rc == 0
    assert stats["events"]["to_kernel"] == len(crossing)
    assert stats["drops"]["kernel_rate"] == 0 and stats["drops"]["kernel_full"] == 0

    # What passes leaves the frontend port, the backend's reply rewritten.
    assert len(out) == len(passing), [p.summary() for p in out]
    assert [bytes(f) for f in out[:3]] == [bytes(f) for f in passing[:3]]
    assert out[3][IP].src == "10.0.0.100" and out[3][TCP].sport == 80

    # The kernel answered through the backend port (and nothing it was
    # sent came back out).
    assert stats["events"]["from_kernel"] >= 4
    assert not any(IP in a and a[IP].dst == local for a in answers)
    arp = [a for a in answers if ARP in a and a[ARP].op == 2]
    assert len(arp) == 1, [a.summary() for a in answers]
    assert arp[0][ARP].hwsrc == kernel_mac and arp[0][ARP].psrc == local
    assert arp[0][ARP].pdst == backend and arp[0][ARP].hwdst == BACKEND_MAC
    assert arp[0][Ether].dst == BACKEND_MAC
    echo = [a for a in answers if ICMP in a and a[ICMP].type == 0]
    assert len(echo) == 1, [a.summary() for a in answers]
    reply = echo[0]
    assert reply[Ether].dst == BACKEND_MAC
    assert (reply[IP].src, reply[IP].dst) == (local, backend)
    assert (reply[ICMP].id, reply[ICMP].seq, bytes(reply[ICMP].payload)) == (77, 3, b"ping")
    assert_checksums(reply)
    reset = [a for a in answers if TCP in a]
    assert len(reset) == 1 and reset[0][TCP].flags == "RA" and reset[0][TCP].dport == 8080
    assert (reset[0][IP].src, reset[0][IP].dst) == (local, backend)
    assert_checksums(reset[0])
    unreachable = [a for a in answers if ICMP in a and a[ICMP].type == 3]
    assert len(unreachable) == 1 and unreachable[0][ICMP].code == 3   # port unreachable
    assert json.loads((tmp_path / "stats.json").read_text())["mbufs_in_use_at_exit"] == 0


def assert_checksums(pkt):
    """Every checksum as scapy computes it afresh."""
    fresh = Ether(bytes(pkt))
    for layer in (IP, TCP, UDP, ICMP):
        if layer in fresh:
            stored = fresh[layer].chksum
            del fresh[layer].chksum
            assert Ether(bytes(fresh))[layer].chksum == stored, layer.__name__


def test_a_flood_to_the_appliance_is_rate_limited_and_counted(tmp_path, net):
    """Beyond kernel_rate, frames for the appliance are dropped and counted
    (the burst passes); frames from a backend's address have a budget of
    their own, which a flood from elsewhere cannot take."""
    prefix, _, config = net
    data = yaml.safe_load(config.read_text())
    data["health_checks"]["kernel_rate"] = 100
    config.write_text(yaml.safe_dump(data))
    local = f"{prefix}.2"
    flood = [Ether(src=OTHER_MAC, dst="02:00:00:00:00:aa")
             / IP(src=f"{prefix}.99", dst=local) / UDP(sport=1, dport=9) for _ in range(300)]
    from_backend = [Ether(src=BACKEND_MAC, dst="02:00:00:00:00:aa")
                    / IP(src=f"{prefix}.10", dst=local) / UDP(sport=1, dport=9)
                    for _ in range(10)]
    run = run_rplb(tmp_path, backend_in=[*flood, *from_backend],
                   rplb_args=["--config", str(config)], duration=1.0)
    assert run.rc == 0, run.stderr
    crossed, dropped = run.counter("events", "to_kernel"), run.counter("drops", "kernel_rate")
    assert crossed + dropped == len(flood) + len(from_backend)
    # One burst of the flood (kernel_burst: 64 frames at once), the few
    # that the rate lets through while rplb reads the file (one per 10 ms),
    # and the backend's ten, after the flood: had they shared the flood's
    # budget, they would have found it spent.
    assert 64 + len(from_backend) <= crossed <= 64 + 5 + len(from_backend), (crossed, dropped)
    assert run.frontend_out == []
    assert run.stats["mbufs_in_use_at_exit"] == 0


def test_an_interface_name_in_use_is_refused_before_forwarding(tmp_path, net):
    _, interface, config = net
    subprocess.run(["ip", "link", "add", interface, "type", "veth", "peer", "name",
                    f"{interface}p"], check=True)
    try:
        run = run_rplb(tmp_path, rplb_args=["--config", str(config)], duration=0.5)
    finally:
        subprocess.run(["ip", "link", "del", interface], check=False)
    assert run.rc == 1
    errors = [line for line in run.stderr.splitlines() if "error:" in line]
    assert errors == [f"rplb-dpdk: error: health_checks.interface {interface}: a network "
                      "interface of that name exists already (another rplb? see `ip link "
                      "show`): give health_checks an interface name of its own"], run.stderr
