"""The pass-through engine: a bump in the wire, byte for byte."""

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from harness import run_rplb

MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def mixed_capture(tag: int):
    """Every kind of frame a wire carries, small and full-size."""
    eth = Ether(src=MAC_A, dst=MAC_B)
    return [
        eth / ARP(op=1, psrc="10.0.0.1", pdst="10.0.0.2"),
        Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(op=2, psrc="10.0.0.2"),
        eth / IPv6(src="fe80::1", dst="fe80::2") / UDP(sport=5, dport=6) / Raw(b"v6"),
        eth / Dot1Q(vlan=42) / IP(src="10.1.0.1", dst="10.1.0.2") / TCP(sport=1000 + tag, dport=80),
        eth / IP(src="10.0.0.1", dst="10.0.0.100") / TCP(sport=4000 + tag, dport=80, flags="S"),
        eth / IP(src="10.0.0.1", dst="10.0.0.100") / UDP(sport=5000 + tag, dport=53) / Raw(b"q" * 20),
        eth / IP(src="10.0.0.1", dst="10.0.0.100") / ICMP(type=8, id=7, seq=tag),
        eth / IP(src="10.0.0.1", dst="10.0.0.100") / TCP(sport=6000 + tag, dport=443)
        / Raw(bytes(range(256)) * 5 + b"x" * 180),                      # a 1514-byte frame
        eth / IP(src="10.0.0.1", dst="10.0.0.100", proto=47) / Raw(b"gre"),
        Ether(src=MAC_A, dst=MAC_B, type=0x88B5) / Raw(b"\x00" * 46),    # unknown ethertype
    ]


def test_mixed_capture_leaves_the_other_port_byte_identical(tmp_path):
    frontend = [bytes(p) for p in mixed_capture(1)]
    backend = [bytes(p) for p in mixed_capture(2)]
    assert max(len(f) for f in frontend) == 1514 and min(len(f) for f in frontend) <= 60

    run = run_rplb(tmp_path, frontend, backend)

    assert run.rc == 0, run.stderr
    assert run.backend_out == frontend       # nothing lost, nothing extra, same order
    assert run.frontend_out == backend
    assert run.stats["events"]["passed_through"] == len(frontend) + len(backend)
    assert run.stats["port"][0]["rx_packets"] == len(frontend)
    assert run.stats["port"][1]["tx_packets"] == len(frontend)
    assert sum(run.stats["drops"].values()) == 0


def test_every_mbuf_returns_to_its_pool(tmp_path):
    frames = [bytes(p) for p in mixed_capture(3)] * 300      # more than a burst, many bursts
    run = run_rplb(tmp_path, frames, frames)
    assert run.rc == 0, run.stderr
    assert len(run.backend_out) == len(frames)
    assert run.stats["mbufs_in_use_at_exit"] == 0
    assert run.stats["mbufs"]["in_use"] == 0


def test_stats_period_prints_testpmd_lines(tmp_path):
    run = run_rplb(tmp_path, [bytes(p) for p in mixed_capture(4)], [],
                   rplb_args=["--stats-period", "0.2"], duration=0.7)
    assert run.rc == 0, run.stderr
    for label in ("RX-packets:", "TX-packets:", "Rx-pps:", "Tx-pps:"):
        # periodic blocks plus the final one, for each of the two ports
        assert run.stdout.count(label) >= 4, label
    assert "NIC statistics for port 0" in run.stdout
    assert "NIC statistics for port 1" in run.stdout
