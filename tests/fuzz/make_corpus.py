#!/usr/bin/env python3
"""Seed corpus for tests/fuzz/fuzz_engine.c: valid frames of every kind the engine
handles, in the harness's record format [op][len:2 LE][payload]."""

import struct
import sys
from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import (ICMPv6DestUnreach, ICMPv6EchoRequest, ICMPv6MLReport2,
                                ICMPv6ND_NS, ICMPv6ND_RA, ICMPv6PacketTooBig, ICMPv6ParamProblem,
                                ICMPv6TimeExceeded,
                                IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,
                                IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, RouterAlert)
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

FRONTEND, BACKEND, TABLES, AGE, SAMPLE = 0x00, 0x01, 0x80, 0x81, 0x82
# A frame the port's RX offload flagged (L4 checksum bad), and the ports'
# checksum offloads (bits: TX frontend, TX backend, RX frontend, RX backend).
FRONTEND_FLAGGED_BAD, BACKEND_FLAGGED_BAD, OFFLOADS = 0x02, 0x03, 0x83
# Two workers: | AT_WORKER1, a frame arrives at worker 1's queue; TAKE, a
# worker takes what the other handed it; STEERING, hardware or software;
# STOP, both stop (rings discarded) and start again.
AT_WORKER1, TAKE, STEERING, STOP = 0x08, 0x84, 0x85, 0x86
# A fragment cut from a datagram, an ICMP error built around a quote
# (frontend / backend): the harness builds the frame (fuzz_engine.c).
FRONTEND_FRAGMENT, BACKEND_FRAGMENT, FRONTEND_ICMP_ERROR, BACKEND_ICMP_ERROR = 4, 5, 6, 7
VIP, VIP2 = "10.0.0.100", "10.0.0.101"
# The harness's first tables: 10.0.0.100 and .101, TCP 80 and UDP 53, with
# backends 192.168.1.x:8080 and up.
BACKEND_IP = "192.168.1.1"


def record(op, payload: bytes) -> bytes:
    return struct.pack("<BH", op, len(payload)) + payload


def frame(pkt) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / pkt)


def fragment_records(op, pkt, size=64, order=None):
    """pkt's fragments (payloads of size bytes) as raw frames of side op."""
    pieces = [record(op, frame(f)) for f in fragment(pkt, fragsize=size)]
    return [pieces[i] for i in order] if order is not None else pieces


def cut(op, datagram, offset_units, length, more, df=False):
    """A fragment op (FRONTEND_FRAGMENT, BACKEND_FRAGMENT) of datagram."""
    return record(op, struct.pack("<HHB", offset_units, length, int(more) | int(df) << 1)
                  + frame(datagram))


def icmp_error(op, icmp_type, code, quote, src, dst, length=None):
    """An ICMP error op (FRONTEND_ICMP_ERROR, BACKEND_ICMP_ERROR) from src to
    dst quoting the first length bytes of quote (all of it by default)."""
    quote = bytes(quote)
    addresses = bytes(IP(src=src, dst=dst))[12:20]
    return record(op, struct.pack("<BBH", icmp_type, code, len(quote) if length is None
                                  else length) + addresses + quote)


def at_worker1(rec: bytes) -> bytes:
    """A frame record of any kind (ops 0x00-0x07), arriving at worker 1."""
    return bytes([rec[0] | AT_WORKER1]) + rec[1:]


def seeds():
    c = "203.0.113.7"
    yield "tcp_syn", [record(FRONTEND, frame(IP(src=c, dst=VIP) / TCP(sport=1000, dport=80, flags="S")))]
    yield "tcp_session", [
        record(FRONTEND, frame(IP(src=c, dst=VIP) / TCP(sport=1001, dport=80, flags="S"))),
        record(BACKEND, frame(IP(src="192.168.1.1", dst=c) / TCP(sport=8080, dport=1001, flags="SA"))),
        record(FRONTEND, frame(IP(src=c, dst=VIP) / TCP(sport=1001, dport=80, flags="A") / Raw(b"x" * 64))),
        record(FRONTEND, frame(IP(src=c, dst=VIP) / TCP(sport=1001, dport=80, flags="FA"))),
        record(SAMPLE, b"\x04"),
        record(AGE, b"\x0b")]
    yield "udp", [record(FRONTEND, frame(IP(src=c, dst=VIP) / UDP(sport=53000, dport=53) / Raw(b"q"))),
                  record(BACKEND, frame(IP(src="192.168.1.2", dst=c) / UDP(sport=8080, dport=53000)))]
    yield "udp_zero_cksum", [record(FRONTEND, frame(IP(src=c, dst=VIP) / UDP(sport=5, dport=53, chksum=0)))]
    yield "icmp_echo", [record(FRONTEND, frame(IP(src=c, dst=VIP2) / ICMP(type=8) / Raw(b"ping")))]
    yield "ip_options", [record(FRONTEND, frame(IP(src=c, dst=VIP, options=[b"\x01\x01\x01\x00"])
                                                / TCP(sport=2, dport=80)))]
    yield "fragment", [record(FRONTEND, frame(IP(src=c, dst=VIP, flags="MF") / TCP(dport=80)))]
    yield "other", [record(FRONTEND, frame(ARP())), record(BACKEND, frame(IPv6() / UDP())),
                    record(FRONTEND, bytes(Ether() / Dot1Q(vlan=3) / IP(dst=VIP) / TCP(dport=80)))]
    yield "table_change", [
        record(FRONTEND, frame(IP(src=c, dst=VIP) / TCP(sport=1002, dport=80, flags="S"))),
        record(TABLES, bytes([2, 3, 1, 5, 1, 6, 2, 7, 0, 2, 1, 1, 9, 2])),
        record(FRONTEND, frame(IP(src=c, dst=VIP) / TCP(sport=1002, dport=80, flags="A")))]
    def flagged_session(port):
        return [
            (FRONTEND, IP(src=c, dst=VIP) / TCP(sport=port, dport=80, flags="S")),
            (BACKEND, IP(src="192.168.1.1", dst=c) / TCP(sport=8080, dport=port, flags="SA")),
            (FRONTEND_FLAGGED_BAD, IP(src=c, dst=VIP) / TCP(sport=port, dport=80, flags="A")),
            (BACKEND_FLAGGED_BAD, IP(src="192.168.1.1", dst=c) / TCP(sport=8080, dport=port))]
    yield "offloads", [rec for port, offloads in ((1003, 0x0), (1004, 0xf), (1005, 0x5))
                       for rec in [record(OFFLOADS, bytes([offloads]))] +
                       [record(op, frame(pkt)) for op, pkt in flagged_session(port)]]
    yield "many_flows", [record(FRONTEND, frame(IP(src=c, dst=VIP) / TCP(sport=3000 + i, dport=80,
                                                                      flags="S")))
                         for i in range(80)]
    # The exception path: ARP about, ICMP/TCP/UDP to the appliance's own
    # address (fuzz_engine.c's LOCAL_ADDR), from a backend's address and
    # from elsewhere, a fragment, other protocols and broken ARP.
    local, backend, stranger = "192.168.1.250", "192.168.1.1", "192.168.1.99"
    yield "exception_path", [
        record(BACKEND, frame(ARP(op=1, psrc=backend, pdst=local))),
        record(BACKEND, frame(ARP(op=2, psrc=stranger, pdst=local, hwdst="02:00:00:00:00:01"))),
        record(BACKEND, frame(ARP(op=1, psrc=backend, pdst="192.168.1.2"))),
        record(BACKEND, frame(IP(src=backend, dst=local) / ICMP(type=8) / Raw(b"ping"))),
        record(BACKEND, frame(IP(src=backend, dst=local) / TCP(sport=8080, dport=40000, flags="SA"))),
        record(BACKEND, frame(IP(src=stranger, dst=local) / UDP(sport=9, dport=9) / Raw(b"x"))),
        record(BACKEND, frame(IP(src=stranger, dst=local, flags="MF") / ICMP())),
        record(BACKEND, frame(IP(src=stranger, dst=local, proto=47) / Raw(b"gre"))),
        record(BACKEND, frame(ARP(op=1, psrc=backend, pdst=local))[:30]),
        record(FRONTEND, frame(IP(src=c, dst=local) / TCP(sport=7, dport=22, flags="S"))),
    ] + [record(BACKEND, frame(IP(src=stranger, dst=local) / UDP(sport=9, dport=i)))
         for i in range(40)]
    # A sample request left pending (a timed-out caller), flows changing,
    # then a smaller request that supersedes it: the late answer of the
    # first must not be taken for the second's, nor overflow its buffer.
    yield "flow_sample_superseded", (
        [record(FRONTEND, frame(IP(src=c, dst=VIP) / TCP(sport=4000 + i, dport=80, flags="S")))
         for i in range(20)] +
        [record(SAMPLE, b"\xff\x01")] +
        [record(FRONTEND, frame(IP(src=c, dst=VIP) / TCP(sport=4100 + i, dport=80, flags="S")))
         for i in range(10)] +
        [record(AGE, b"\x00"), record(SAMPLE, b"\x03\x01"), record(SAMPLE, b"\x02")])
    # Two workers: clients owned by either (the owner is a function of the
    # client address), each frame on the other worker's queue half the
    # time, replies handed over, taken, sampled on both workers.
    clients = [f"203.0.113.{i}" for i in range(1, 9)]

    # The harness's first tables send web's flows to 192.168.1.2:8080 or
    # 192.168.1.1:8081: a reply from each, one of them the flow's.
    def session(client, port, worker):
        return [
            record(FRONTEND | worker, frame(IP(src=client, dst=VIP) / TCP(sport=port, dport=80,
                                                                          flags="S"))),
            record(TAKE, b"\x00"), record(TAKE, b"\x01"),
            record(BACKEND | (worker ^ AT_WORKER1), frame(IP(src="192.168.1.2", dst=client)
                                                          / TCP(sport=8080, dport=port,
                                                                flags="SA"))),
            record(BACKEND | (worker ^ AT_WORKER1), frame(IP(src="192.168.1.1", dst=client)
                                                          / TCP(sport=8081, dport=port,
                                                                flags="SA"))),
            record(FRONTEND | worker, frame(IP(src=client, dst=VIP) / TCP(sport=port, dport=80,
                                                                          flags="A")))]
    yield "two_workers", (
        [rec for i, c in enumerate(clients) for rec in session(c, 5000 + i, AT_WORKER1 * (i & 1))]
        + [record(SAMPLE, b"\x08\x00\x00"), record(SAMPLE, b"\x08\x00\x01"),
           record(TAKE, b"\x00"), record(TAKE, b"\x01"), record(AGE, b"\x01")])
    # More frames for the other worker than its ring holds, never taken
    # until the end: handoff_full; then a stop discards what is left.
    yield "handoff_full", (
        [record(BACKEND | AT_WORKER1 * (i & 1), frame(IP(src="192.168.1.2", dst=c)
                                                      / UDP(sport=8080, dport=6000 + i)))
         for i in range(40) for c in clients[:2]] + [record(STOP, b"")])
    # ICMP errors about flows: a router on the clients' side quotes a reply
    # (vip:80 -> client), a router on the backends' side a request
    # (client -> backend), each steered by the quoted client; in software
    # and in hardware steering.
    def icmp_errors(client, port):
        return [
            record(FRONTEND, frame(IP(src=client, dst=VIP) / TCP(sport=port, dport=80, flags="S"))),
            record(FRONTEND | AT_WORKER1, frame(
                IP(src="198.51.100.1", dst=VIP) / ICMP(type=3, code=4)
                / IP(src=VIP, dst=client) / TCP(sport=80, dport=port, flags="SA"))),
            record(BACKEND | AT_WORKER1, frame(
                IP(src="192.168.9.1", dst=client) / ICMP(type=11, code=0)
                / IP(src=client, dst="192.168.1.1") / TCP(sport=port, dport=8080))),
            record(BACKEND, frame(IP(src="192.168.9.1", dst=client) / ICMP(type=12)
                                  / IP(src=client, dst="192.168.1.1", ihl=15)))]
    yield "icmp_errors_steered", (
        icmp_errors(clients[0], 7000) + [record(STEERING, b"\x01")]
        + icmp_errors(clients[1], 7001) + [record(STEERING, b"\x00"), record(TAKE, b"\x01")])
    # IPv4 fragments (fragment_table.h): a datagram to a UDP service in
    # order, another in reverse order (its later fragments held until the
    # first), a third interleaved; a duplicate and an overlap; a datagram
    # whose first fragment never comes, then a clock jump past the timeout.
    big = IP(src=c, dst=VIP, id=0x100) / UDP(sport=5300, dport=53) / Raw(bytes(range(200)))
    other = IP(src=c, dst=VIP, id=0x101) / UDP(sport=5301, dport=53) / Raw(b"o" * 150)
    yield "fragments_in_order_and_reverse", (
        fragment_records(FRONTEND, big) + fragment_records(FRONTEND, other, order=[2, 1, 0]))
    yield "fragments_interleaved_duplicated_overlapping", (
        [rec for pair in zip(fragment_records(FRONTEND, big), fragment_records(FRONTEND, other))
         for rec in pair] +
        fragment_records(FRONTEND, big, order=[1]) +
        [record(FRONTEND, frame(IP(src=c, dst=VIP, id=0x100, flags="MF", frag=7, proto=17)
                                / Raw(b"v" * 24)))])
    yield "fragments_timed_out", (
        fragment_records(FRONTEND, big)[1:] + [record(AGE, b"\x03")] +
        fragment_records(FRONTEND, big)[:1])
    tcp_big = IP(src=c, dst=VIP, id=0x102) / TCP(sport=5302, dport=80, flags="PA") \
        / Raw(bytes(range(180)))
    yield "fragments_cut_by_the_harness", [
        cut(FRONTEND_FRAGMENT, tcp_big, 0, 64, True), cut(FRONTEND_FRAGMENT, tcp_big, 16, 64, True),
        cut(FRONTEND_FRAGMENT, tcp_big, 8, 64, True, df=True),
        cut(FRONTEND_FRAGMENT, tcp_big, 24, 200, False), cut(FRONTEND_FRAGMENT, tcp_big, 12, 16, True)]
    reply = IP(src=BACKEND_IP, dst=c, id=0x200) / UDP(sport=8080, dport=5300) \
        / Raw(bytes(range(160)))
    yield "fragmented_reply", (
        [record(FRONTEND, frame(IP(src=c, dst=VIP) / UDP(sport=5300, dport=53) / Raw(b"q")))] +
        fragment_records(BACKEND, reply, order=[2, 0, 1]) +
        [cut(BACKEND_FRAGMENT, reply, 0, 32, True), cut(BACKEND_FRAGMENT, reply, 4, 200, False)])
    ping = IP(src=c, dst=VIP2, id=0x300) / ICMP(type=8, id=1, seq=1) / Raw(b"p" * 120)
    yield "fragmented_ping", fragment_records(FRONTEND, ping, order=[1, 0])
    yield "many_fragmented_datagrams", [
        rec for i in range(20) for rec in fragment_records(
            FRONTEND, IP(src=c, dst=VIP, id=0x400 + i) / UDP(sport=5400 + i, dport=53)
            / Raw(b"m" * 100), order=[1, 0] if i % 2 else [1])]
    # ICMP errors (lb_icmp.c): about a flow's reply, from the clients' side
    # to the VIP (frag-needed, whole quote and 8 bytes of it); about a
    # client's packet, from the backends' side (a router's, and the
    # backend's own port unreachable); broken and foreign quotes.
    to_client = IP(src=VIP, dst=c) / TCP(sport=80, dport=1001, flags="SA") / Raw(b"r" * 40)
    to_backend = IP(src=c, dst=BACKEND_IP) / UDP(sport=5300, dport=8080) / Raw(b"u" * 30)
    yield "icmp_errors", [
        record(FRONTEND, frame(IP(src=c, dst=VIP) / TCP(sport=1001, dport=80, flags="S"))),
        record(FRONTEND, frame(IP(src=c, dst=VIP) / UDP(sport=5300, dport=53) / Raw(b"q"))),
        icmp_error(FRONTEND_ICMP_ERROR, 3, 4, to_client, "198.51.100.1", VIP),
        icmp_error(FRONTEND_ICMP_ERROR, 11, 0, to_client, "198.51.100.1", VIP, length=28),
        icmp_error(FRONTEND_ICMP_ERROR, 12, 0, to_client, "198.51.100.1", VIP, length=38),
        icmp_error(BACKEND_ICMP_ERROR, 3, 4, to_backend, "192.168.1.254", c),
        icmp_error(BACKEND_ICMP_ERROR, 3, 3, to_backend, BACKEND_IP, c, length=28),
        icmp_error(FRONTEND_ICMP_ERROR, 3, 1, to_client, "198.51.100.1", VIP, length=20),
        icmp_error(FRONTEND_ICMP_ERROR, 3, 1, IP(src=VIP, dst=c) / ICMP(type=0),
                   "198.51.100.1", VIP),
        record(FRONTEND, frame(IP(src="198.51.100.1", dst=VIP2) / ICMP(type=3, code=4)
                               / Raw(bytes(IP(src=VIP2, dst=c) / UDP(sport=53, dport=9)))))]
    # Fragments and ICMP errors with two workers: one datagram's fragments
    # received by both workers (the owner is its client's, so the other
    # hands its share over, the later ones before the first: held on the
    # owner), a fragmented reply the same way, ICMP errors the harness
    # builds arriving at worker 1, an ICMP error in fragments on both
    # (steered by its outer address), and both workers stopped while a
    # datagram's fragments are held (flushed and counted).
    def spread(records):
        return [at_worker1(rec) if i % 2 else rec for i, rec in enumerate(records)]
    two = ["203.0.113.1", "203.0.113.2"]
    datagrams = [IP(src=client, dst=VIP, id=0x500 + i) / UDP(sport=5500 + i, dport=53)
                 / Raw(bytes(range(180))) for i, client in enumerate(two)]
    replies = [IP(src=BACKEND_IP, dst=client, id=0x600 + i) / UDP(sport=8080, dport=5500 + i)
               / Raw(bytes(range(140))) for i, client in enumerate(two)]
    yield "fragments_and_icmp_errors_at_both_workers", (
        [rec for d in datagrams for rec in spread(fragment_records(FRONTEND, d, order=[2, 1, 0]))]
        + [record(TAKE, b"\x00"), record(TAKE, b"\x01")]
        + [rec for r in replies for rec in spread(fragment_records(BACKEND, r, order=[1, 0, 2]))]
        + [at_worker1(icmp_error(FRONTEND_ICMP_ERROR, 3, 4,
                                 IP(src=VIP, dst=client) / UDP(sport=53, dport=5500 + i),
                                 "198.51.100.1", VIP)) for i, client in enumerate(two)]
        + [at_worker1(icmp_error(BACKEND_ICMP_ERROR, 11, 0,
                                 IP(src=client, dst=BACKEND_IP) / UDP(sport=5500 + i, dport=8080),
                                 "192.168.1.254", client)) for i, client in enumerate(two)]
        + spread(fragment_records(FRONTEND, IP(src="198.51.100.1", dst=VIP, id=0x700)
                                  / ICMP(type=3, code=4)
                                  / Raw(bytes(IP(src=VIP, dst=two[0]) / UDP(sport=53, dport=5500)
                                              / Raw(b"e" * 160))), size=64))
        + [at_worker1(cut(FRONTEND_FRAGMENT, datagrams[0], 8, 64, True)), record(STOP, b"")]
        + spread(fragment_records(FRONTEND, datagrams[1])))


def ipv6_seeds():
    """IPv6 (csrc/lb_ipv6.c): the harness's tables give every service an
    IPv6 twin on fd00::100 / fd00::101 with backends fd00:1::0-7."""
    vip6, vip6b = "fd00::100", "fd00::101"
    backends6 = [f"fd00:1::{i}" for i in range(8)]
    clients6 = ["2001:db8::1", "2001:db8:1::2", "2001:db8:2::3"]
    session = []
    for i, client in enumerate(clients6):
        for flags in ("S", "A", "PA", "FA"):
            session.append(record(FRONTEND, frame(IPv6(src=client, dst=vip6)
                                                  / TCP(sport=4000 + i, dport=80, flags=flags)
                                                  / Raw(b"v6"))))
        session.append(record(FRONTEND, frame(IPv6(src=client, dst=vip6)
                                              / UDP(sport=5000 + i, dport=53) / Raw(b"q6"))))
        for backend in backends6:
            session.append(record(BACKEND, frame(IPv6(src=backend, dst=client)
                                                 / TCP(sport=8080, dport=4000 + i, flags="A"))))
            session.append(record(BACKEND, frame(IPv6(src=backend, dst=client)
                                                 / UDP(sport=8080, dport=5000 + i) / Raw(b"a"))))
    yield "ipv6_sessions", (
        session + [record(SAMPLE, b"\x10\x00\x00"), record(SAMPLE, b"\x10\x00\x01"),
                   record(AGE, b"\x0b"), record(TABLES, b"\x03\x02\x01\x02\x05\x00\x00"),
                   record(AGE, b"\xff")] + session[:6])
    yield "ipv6_at_both_workers", (
        [at_worker1(rec) if i % 2 else rec for i, rec in enumerate(session)]
        + [record(TAKE, b"\x00"), record(TAKE, b"\x01"), record(STEERING, b"\x01")]
        + [at_worker1(rec) for rec in session] + [record(TAKE, b"\x00"), record(STOP, b"")])
    tcp = TCP(sport=4100, dport=80, flags="S")
    hostile = []
    for dst in (vip6, "2001:db8::99"):
        base = IPv6(src="2001:db8::66", dst=dst)
        nine = base
        for _ in range(9):
            nine = nine / IPv6ExtHdrDestOpt()
        hostile += [
            frame(base / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
                  / IPv6ExtHdrRouting(addresses=["2001:db8::77"], segleft=0) / tcp),
            frame(nine / tcp),
            frame(base / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / tcp),
            frame(base / IPv6ExtHdrRouting(addresses=["2001:db8::77"], segleft=1) / tcp),
            frame(IPv6(src="2001:db8::66", dst=dst, nh=60) / Raw(bytes([6, 31, 1, 252]) + bytes(252))
                  / tcp),
            frame(base / IPv6ExtHdrFragment(m=1, id=7) / tcp),
            frame(base / UDP(sport=4100, dport=53, chksum=0) / Raw(b"z")),
            frame(base / tcp)[:14 + 40 + 10],
            frame(base / IPv6ExtHdrDestOpt() / tcp)[:14 + 40 + 6],
            frame(base / ICMPv6EchoRequest(id=1, seq=2, data=b"ping")),
            frame(base / ICMPv6EchoRequest())[:14 + 40 + 4],
        ]
    other = [
        frame(IPv6(src="fe80::1", dst="ff02::1:ff00:100", hlim=255) / ICMPv6ND_NS(tgt=vip6)),
        frame(IPv6(src="fe80::1", dst="ff02::1", hlim=255) / ICMPv6ND_RA()),
        frame(IPv6(src="fe80::1", dst="ff02::16", hlim=1)
              / IPv6ExtHdrHopByHop(options=[RouterAlert()]) / ICMPv6MLReport2()),
        frame(IPv6(src="2001:db8::5", dst=vip6b) / TCP(sport=1, dport=80)),
        frame(IPv6(src="2001:db8::5", dst="fd00:1::1") / TCP(sport=1, dport=8080)),
    ]
    quoted_reply = bytes(IPv6(src=vip6, dst=clients6[0]) / TCP(sport=80, dport=4000, flags="A")
                         / Raw(b"r" * 40))
    quoted_request = bytes(IPv6(src=clients6[0], dst=backends6[1]) / TCP(sport=4000, dport=8080)
                           / Raw(b"u" * 40))
    errors6 = [record(FRONTEND, frame(IPv6(src="2001:db8:ffff::1", dst=vip6) / raw_type
                                      / Raw(quoted_reply[:length])))
               for raw_type in (ICMPv6PacketTooBig(mtu=1280), ICMPv6DestUnreach(code=4),
                                ICMPv6TimeExceeded(), ICMPv6ParamProblem(ptr=6))
               for length in (30, 48, 60, None)]
    errors6 += [record(BACKEND, frame(IPv6(src=source, dst=clients6[0])
                                      / ICMPv6PacketTooBig(mtu=1280) / Raw(quoted_request[:length])))
                for source in ("fd00:1::fe", backends6[1]) for length in (48, 70, None)]
    yield "ipv6_icmp_errors", (session[:5] + errors6 + [at_worker1(r) for r in errors6]
                               + [record(TAKE, b"\x00"), record(TAKE, b"\x01")])
    yield from ipv6_fragment_seeds(vip6, backends6, clients6)
    yield "ipv6_extension_chains_and_others", (
        [record(FRONTEND, f) for f in hostile + other]
        + [record(BACKEND, f) for f in hostile + other]
        + [record(FRONTEND_FLAGGED_BAD, hostile[0]), record(OFFLOADS, b"\x0f")]
        + [record(FRONTEND, f) for f in hostile[:1]] + [record(BACKEND_FLAGGED_BAD, hostile[0])])


def fragments6(side, src, dst, nh, ident, data, size=64, order=None):
    """The raw frames (op FRONTEND or BACKEND) of data's IPv6 fragments,
    size bytes each (the last shorter)."""
    pieces = []
    for offset in range(0, len(data), size):
        more = int(offset + size < len(data))
        pieces.append(record(side, frame(IPv6(src=src, dst=dst)
                                         / IPv6ExtHdrFragment(nh=nh, id=ident, offset=offset // 8,
                                                              m=more)
                                         / Raw(data[offset:offset + size]))))
    return [pieces[i] for i in order] if order is not None else pieces


def ipv6_fragment_seeds(vip6, backends6, clients6):
    """IPv6 fragments (lb_fragments.c: rplb_lb_fragment6): in order,
    reversed, interleaved, duplicated, overlapping, replies from backends,
    a ping, atomic and malformed ones, at both workers, timed out."""
    def segment(src, dst, l4, size, seed):
        return bytes((IPv6(src=src, dst=dst) / l4 / Raw(bytes((i + seed) & 0xFF
                                                            for i in range(size))))[1])

    c0, c1 = clients6[0], clients6[1]
    udp = segment(c0, vip6, UDP(sport=6000, dport=53), 300, 1)
    tcp = segment(c1, vip6, TCP(sport=6001, dport=80, flags="PA"), 300, 2)
    reply = segment(backends6[2], c1, TCP(sport=8080, dport=6001, flags="PA"), 300, 3)
    stateless = segment(backends6[3], c0, UDP(sport=8080, dport=6002), 300, 4)
    ping = segment(c0, vip6, ICMPv6EchoRequest(id=5, seq=6), 300, 5)
    in_order = fragments6(FRONTEND, c0, vip6, 17, 0x100, udp)
    reverse = fragments6(FRONTEND, c1, vip6, 6, 0x101, tcp)[::-1]
    replies = fragments6(BACKEND, backends6[2], c1, 6, 0x102, reply, order=[2, 0, 1, 3, 4])
    stateless_replies = fragments6(BACKEND, backends6[3], c0, 17, 0x103, stateless)[::-1]
    pings = fragments6(FRONTEND, c0, vip6, 58, 0x104, ping, size=128, order=[1, 0, 2])
    again = fragments6(FRONTEND, c0, vip6, 17, 0x105, udp)
    interleaved = [rec for pair in zip(again, fragments6(FRONTEND, c1, vip6, 17, 0x106, udp))
                   for rec in pair]
    duplicated = again[:2] + again[1:3] + again[:1]
    overlapping = [again[0], record(FRONTEND, frame(
        IPv6(src=c0, dst=vip6) / IPv6ExtHdrFragment(nh=17, id=0x105, offset=4, m=1)
        / Raw(b"o" * 64)))]
    odd = [frame(IPv6(src=c0, dst=vip6) / IPv6ExtHdrFragment(nh=17, id=0x107, m=0) / Raw(udp)),
           frame(IPv6(src=c0, dst=vip6) / IPv6ExtHdrFragment(nh=17, id=0x108, m=1)
                 / Raw(udp[:20])),
           frame(IPv6(src=c0, dst=vip6) / IPv6ExtHdrFragment(nh=17, id=0x109, offset=8190, m=0)
                 / Raw(bytes(64))),
           frame(IPv6(src=c0, dst=vip6) / IPv6ExtHdrFragment(nh=6, id=0x10a, m=1)
                 / Raw(tcp[:8])),
           frame(IPv6(src=c0, dst=vip6) / IPv6ExtHdrFragment(nh=60, id=0x10b, m=1)
                 / Raw(bytes([6, 0, 0, 0, 0, 0, 0, 0]) + tcp[:56])),
           frame(IPv6(src=c0, dst=vip6) / IPv6ExtHdrFragment(nh=44, id=0x10c, m=1)
                 / IPv6ExtHdrFragment(nh=17, id=0x10c, m=1) / Raw(udp[:56])),
           frame(IPv6(src=c0, dst=vip6) / IPv6ExtHdrFragment(nh=17, id=0x10d, offset=1, m=1))]
    yield "ipv6_fragments", (
        in_order + reverse + replies + stateless_replies + pings + interleaved + duplicated
        + overlapping + [record(FRONTEND, f) for f in odd] + [record(BACKEND, f) for f in odd]
        + [record(AGE, b"\x10")])
    yield "ipv6_fragments_at_both_workers_timed_out", (
        [at_worker1(rec) if i % 2 else rec for i, rec in enumerate(in_order + replies)]
        + [record(TAKE, b"\x00"), record(TAKE, b"\x01")] + reverse[:-1]
        + [at_worker1(rec) for rec in stateless_replies[:-1]]
        + [record(AGE, b"\x03"), record(AGE, b"\x10")] + reverse[-1:] + [record(STOP, b"")])


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "corpus")
    out.mkdir(parents=True, exist_ok=True)
    for name, records in [*seeds(), *ipv6_seeds()]:
        (out / name).write_bytes(b"".join(records))
