"""Hostile and odd frames through net_pcap: for each, the verdict rplb
gives, the counter that moves, and every mbuf back in its pool.

Verdicts (also in README.md, "Hostile input"):
- broken IPv4/L4 headers addressed to a VIP: dropped, `malformed`; so are
  fragments to a VIP that no datagram can hold (empty, beyond 65,535
  bytes, a length not a multiple of 8 with more to come) and first
  fragments too short for their TCP/UDP header;
- other fragments to a VIP are translated (tests/test_fragments.py); one
  whose datagram's first fragment never comes is held, then freed and
  counted (`fragment_timeout`, here when rplb stops);
- ICMP errors to a VIP whose quote is too short or broken: dropped,
  `icmp_error_malformed`; quotes of other protocols are forwarded
  unchanged, `icmp_errors_unmatched` (tests/test_icmp_errors.py);
- anything not addressed to a VIP, however broken: passed through unchanged
  (rplb is a bump in the wire, not a router or a firewall);
- TTL is not a concern of a bump in the wire: TTL 0/1 is load-balanced;
- addresses are not policed: 0.0.0.0 or broadcast sources are load-balanced;
- any TCP flag combination is load-balanced (FIN/RST only shorten aging);
- bad checksums: forwarded with the error preserved (see test_lb.py), or
  dropped as `bad_checksum` where the NIC verifies them (test_live_reload.py).
"""

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from harness import run_rplb
from lbcheck import assert_checksums_valid
from test_lb import SERVICES, write_config

VIP = "10.0.0.100"
BACKEND_IPS = {b["ip"] for b in SERVICES[0]["backends"]}
ETH = Ether(src="02:00:00:00:00:c1", dst="02:00:00:00:00:1b")


def to_vip(l4=None, **ip):
    pkt = ETH / IP(src=ip.pop("src", "203.0.113.5"), dst=ip.pop("dst", VIP), **ip)
    return pkt / (l4 if l4 is not None else TCP(sport=1111, dport=80, flags="S") / Raw(b"x" * 8))


def patched(pkt, offset, value: bytes):
    frame = bytearray(bytes(pkt))
    frame[offset:offset + len(value)] = value
    return bytes(frame)


def icmp_error_to_vip(quote: bytes, **icmp):
    """A "destination unreachable" to the VIP quoting these bytes."""
    return bytes(ETH / IP(src="198.51.100.1", dst=VIP) / ICMP(type=3, code=icmp.pop("code", 1))
                 / Raw(quote))


QUOTE = bytes(IP(src=VIP, dst="203.0.113.5") / UDP(sport=80, dport=5000) / Raw(b"q" * 8))

# name -> (frame, verdict, counter)
#   verdict: "drop" | "pass" | "balance" | "reply" (out the frontend)
IP_AT = 14
CASES = {
    "truncated ethernet": (bytes(ETH)[:10], "pass", ("events", "passed_through")),
    "ethernet only": (bytes(Ether(src="02:00:00:00:00:c1", dst="02:00:00:00:00:1b", type=0x0800)),
                      "pass", ("events", "passed_through")),
    "truncated ipv4 header": (bytes(to_vip())[:IP_AT + 18], "pass", ("events", "passed_through")),
    "ihl below 5": (patched(to_vip(), IP_AT, b"\x44"), "drop", ("drops", "malformed")),
    "ihl beyond the frame": (patched(bytes(to_vip())[:IP_AT + 24], IP_AT, b"\x4f"),
                             "drop", ("drops", "malformed")),
    "version 6 in an ipv4 ethertype": (patched(to_vip(), IP_AT, b"\x65"), "drop",
                                       ("drops", "malformed")),
    "total length beyond the frame": (patched(to_vip(), IP_AT + 2, (1400).to_bytes(2, "big")),
                                      "drop", ("drops", "malformed")),
    "total length below the header": (patched(to_vip(), IP_AT + 2, (12).to_bytes(2, "big")),
                                      "drop", ("drops", "malformed")),
    "truncated tcp header": (bytes(to_vip(Raw(b"\x04\x57\x00\x50\x00\x00"), proto=6)),
                             "drop", ("drops", "malformed")),
    "tcp data offset below 5": (patched(to_vip(), IP_AT + 20 + 12, b"\x40"), "drop",
                                ("drops", "malformed")),
    "tcp data offset beyond the packet": (patched(to_vip(), IP_AT + 20 + 12, b"\xf0"), "drop",
                                          ("drops", "malformed")),
    "truncated udp header": (bytes(to_vip(Raw(b"\x04\x57\x00"), proto=17)), "drop",
                             ("drops", "malformed")),
    "truncated icmp header": (bytes(to_vip(Raw(b"\x08\x00\x00"), proto=1)), "drop",
                              ("drops", "malformed")),
    "fragment of 28 bytes with more to come": (bytes(to_vip(flags="MF", frag=0)), "drop",
                                               ("drops", "malformed")),
    "empty fragment": (bytes(to_vip(Raw(b""), flags="MF", frag=2, proto=17)), "drop",
                       ("drops", "malformed")),
    "fragment beyond 65535 bytes": (bytes(to_vip(Raw(b"b" * 16), frag=8190, proto=17)), "drop",
                                    ("drops", "malformed")),
    "first fragment with half a tcp header": (bytes(to_vip(Raw(b"h" * 8), flags="MF", proto=6)),
                                              "drop", ("drops", "malformed")),
    "middle fragment, first never comes": (bytes(to_vip(Raw(b"m" * 16), flags="MF", frag=2,
                                                       proto=6)),
                                           "drop", ("drops", "fragment_timeout")),
    "last fragment, first never comes": (bytes(to_vip(Raw(b"l" * 16), frag=4, proto=6)), "drop",
                                         ("drops", "fragment_timeout")),
    "icmp echo fragment": (bytes(to_vip(ICMP() / Raw(b"p" * 16), flags="MF")), "reply",
                           ("events", "icmp_echo_replied")),
    "icmp error, quote of 27 bytes": (icmp_error_to_vip(QUOTE[:27]), "drop",
                                      ("drops", "icmp_error_malformed")),
    "icmp error, quote not ipv4": (icmp_error_to_vip(b"\x65" + QUOTE[1:]), "drop",
                                   ("drops", "icmp_error_malformed")),
    "icmp error, quoted ihl beyond the quote": (icmp_error_to_vip(b"\x4f" + QUOTE[1:]), "drop",
                                                ("drops", "icmp_error_malformed")),
    "icmp error, quote from another address": (icmp_error_to_vip(bytes(
        IP(src="10.0.0.99", dst="203.0.113.5") / UDP(sport=80, dport=5000))), "drop",
        ("drops", "icmp_error_malformed")),
    "icmp error, quoted fragment after the first": (icmp_error_to_vip(bytes(
        IP(src=VIP, dst="203.0.113.5", frag=3, proto=17) / Raw(b"f" * 8))), "drop",
        ("drops", "icmp_error_malformed")),
    "icmp error, quote of another protocol": (icmp_error_to_vip(bytes(
        IP(src=VIP, dst="203.0.113.5") / ICMP(type=0) / Raw(b"e" * 8))), "pass",
        ("events", "icmp_errors_unmatched")),
    "icmp error, quote for no service": (icmp_error_to_vip(bytes(
        IP(src=VIP, dst="203.0.113.5") / UDP(sport=9999, dport=5000))), "pass",
        ("events", "icmp_errors_unmatched")),
    "fragment to a non-vip": (bytes(to_vip(flags="MF", dst="10.9.9.9")), "pass",
                              ("events", "passed_through")),
    "broken header to a non-vip": (patched(to_vip(dst="10.9.9.9"), IP_AT, b"\x44"), "pass",
                                   ("events", "passed_through")),
    "ipv4 options": (bytes(to_vip(options=[b"\x07\x07\x04\x00\x00\x00\x00"])), "balance",
                     ("events", "to_backend")),
    "ttl 0": (bytes(to_vip(ttl=0)), "balance", ("events", "to_backend")),
    "ttl 1": (bytes(to_vip(ttl=1)), "balance", ("events", "to_backend")),
    "zero source": (bytes(to_vip(src="0.0.0.0")), "balance", ("events", "to_backend")),
    "broadcast source": (bytes(to_vip(src="255.255.255.255")), "balance",
                         ("events", "to_backend")),
    "broadcast destination": (bytes(to_vip(dst="255.255.255.255")), "pass",
                              ("events", "passed_through")),
    "zero destination": (bytes(to_vip(dst="0.0.0.0")), "pass", ("events", "passed_through")),
    "tcp syn+fin": (bytes(to_vip(TCP(sport=1, dport=80, flags="SF"))), "balance",
                    ("events", "to_backend")),
    "tcp no flags": (bytes(to_vip(TCP(sport=2, dport=80, flags=0))), "balance",
                     ("events", "to_backend")),
    "tcp all flags": (bytes(to_vip(TCP(sport=3, dport=80, flags=0xFF))), "balance",
                      ("events", "to_backend")),
    "tcp syn+rst": (bytes(to_vip(TCP(sport=4, dport=80, flags="SR"))), "balance",
                    ("events", "to_backend")),
    "jumbo frame": (bytes(to_vip(TCP(sport=5, dport=80, flags="A") / Raw(b"j" * 8900))),
                    "balance", ("events", "to_backend")),
    "vlan tagged": (bytes(ETH / Dot1Q(vlan=10) / IP(dst=VIP) / TCP(dport=80)), "pass",
                    ("events", "passed_through")),
    "qinq": (bytes(ETH / Dot1AD(vlan=20) / Dot1Q(vlan=10) / IP(dst=VIP) / TCP(dport=80)), "pass",
             ("events", "passed_through")),
    "padding after total length": (bytes(to_vip()) + b"\x00" * 30, "balance",
                                   ("events", "to_backend")),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_verdict_counter_and_mbufs(tmp_path, name):
    frame, verdict, (group, counter) = CASES[name]
    run = run_rplb(tmp_path, [frame], [], rplb_args=["--config", str(write_config(tmp_path))],
                   duration=0.3)
    assert run.rc == 0, run.stderr
    assert run.stats["mbufs_in_use_at_exit"] == 0
    assert run.stats[group][counter] == 1, (group, counter, run.stats[group])
    if verdict == "drop":
        assert run.backend_out == [] and run.frontend_out == []
    elif verdict == "reply":
        assert run.backend_out == [] and len(run.frontend_out) == 1
        assert_checksums_valid(run.frontend_out[0])
    elif verdict == "pass":
        assert run.backend_out == [frame] and run.frontend_out == []
    else:
        assert len(run.backend_out) == 1 and run.frontend_out == []
        out = Ether(run.backend_out[0])
        assert out[IP].dst in BACKEND_IPS and out[TCP].dport == 8080
        assert len(run.backend_out[0]) == len(frame)
        # everything but destination address, port and checksums is unchanged
        assert run.backend_out[0][:IP_AT + 10] == frame[:IP_AT + 10]
        assert run.backend_out[0][IP_AT + 12:IP_AT + 16] == frame[IP_AT + 12:IP_AT + 16]
        if name != "padding after total length":
            assert_checksums_valid(run.backend_out[0])
