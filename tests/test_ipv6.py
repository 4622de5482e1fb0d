"""IPv6 services on the wire (issue 19): scapy frames through net_pcap,
checked field by field, checksums recomputed independently by scapy.

The engine is driven by tests/v6driver.py with the contract's spec rows
(the services file learns IPv6 in the control plane's branch); every run
is a process of its own."""

import collections
import json
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import (ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest,
                                ICMPv6MLReport2, ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6ND_RA,
                                ICMPv6NDOptSrcLLAddr, IPv6, IPv6ExtHdrDestOpt,
                                IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting,
                                RouterAlert)
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from lbcheck import (assert_checksums_valid, assert_checksums_valid6, expected_backend,
                     expected_backend6, steering_owner6)

CLIENT_MAC, LB_MAC, SERVER_MAC = "02:00:00:00:00:c1", "02:00:00:00:00:1b", "02:00:00:00:00:5e"
MAGLEV_SIZE = 251
DRIVER = Path(__file__).resolve().parent / "v6driver.py"

VIP, VIP2 = "fd00::100", "fd00::200"
WEB6 = {"family": 6, "vip": VIP, "proto": "tcp", "port": 80, "service_id": 0, "backends": [
    {"ip": "fd00:1::10", "port": 8080, "weight": 10, "slot": 0},
    {"ip": "fd00:1::11", "port": 8080, "weight": 5, "slot": 1}]}
DNS6 = {"family": 6, "vip": VIP, "proto": "udp", "port": 53, "service_id": 1, "backends": [
    {"ip": "fd00:2::20", "port": 5353, "weight": 1, "slot": 2}]}
WEB4 = {"family": 4, "vip": "10.0.0.100", "proto": "tcp", "port": 80, "service_id": 2,
        "backends": [{"ip": "192.168.1.10", "port": 8080, "weight": 1, "slot": 3}]}
SERVICES = [WEB6, DNS6, WEB4]


def run_v6(tmp_path, phases, services=SERVICES, workers=1, **top):
    """Run the driver; returns its output (phases, mbufs_in_use_at_exit).
    phases: [{"frontend": [frames] or [[queue 0], [queue 1]], "backend": ...,
    "services"?}]."""
    def queues(frames):
        frames = list(frames)
        if frames and isinstance(frames[0], list):
            return [[bytes(f).hex() for f in q] for q in frames]
        return [[bytes(f).hex() for f in frames]] + [[] for _ in range(workers - 1)]

    spec = {"workers": workers, "dir": str(tmp_path), "maglev_size": MAGLEV_SIZE,
            "services": services, **top,
            "phases": [{**{k: v for k, v in p.items() if k not in ("frontend", "backend")},
                        "frontend": queues(p.get("frontend", ())),
                        "backend": queues(p.get("backend", ()))} for p in phases]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, str(DRIVER), str(tmp_path / "spec.json"),
                           str(tmp_path / "out.json")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["mbufs_in_use_at_exit"] == 0
    for phase in out["phases"]:
        phase["frontend_out"] = [bytes.fromhex(f) for q in phase["frontend_out"] for f in q]
        phase["backend_out"] = [bytes.fromhex(f) for q in phase["backend_out"] for f in q]
    return out


def events(phase):
    return {k: v for k, v in phase["counters"]["events"].items() if v}


def drops(phase):
    return {k: v for k, v in phase["counters"]["drops"].items() if v}


def client6(src, sport, dst=VIP, dport=80, proto="tcp", flags="S", payload=b"hello", ext=()):
    l4 = TCP(sport=sport, dport=dport, flags=flags, seq=1000, ack=0) if proto == "tcp" \
        else UDP(sport=sport, dport=dport)
    ip = IPv6(src=src, dst=dst, hlim=61, tc=0x28, fl=0x12345)
    for header in ext:
        ip = ip / header
    return Ether(src=CLIENT_MAC, dst=LB_MAC) / ip / l4 / Raw(payload)


def reply6(src, sport, dst, dport, proto="tcp", flags="SA", payload=b"world"):
    l4 = TCP(sport=sport, dport=dport, flags=flags, seq=5000, ack=1006) if proto == "tcp" \
        else UDP(sport=sport, dport=dport)
    return Ether(src=SERVER_MAC, dst=LB_MAC) / IPv6(src=src, dst=dst, hlim=63) / l4 / Raw(payload)


def check_rewritten(sent, out, dst=None, dport=None, src=None, sport=None):
    """out is sent with only the named address/port changed (and the L4
    checksum, checked by scapy)."""
    a, b = Ether(bytes(sent)), Ether(out)
    assert b[Ether].src == a[Ether].src and b[Ether].dst == a[Ether].dst
    ia, ib = a[IPv6], b[IPv6]
    assert (ib.version, ib.tc, ib.fl, ib.plen, ib.nh, ib.hlim) == \
        (ia.version, ia.tc, ia.fl, ia.plen, ia.nh, ia.hlim)
    assert ib.src == (src or ia.src) and ib.dst == (dst or ia.dst)
    l4a = a[TCP] if TCP in a else a[UDP]
    l4b = b[TCP] if TCP in b else b[UDP]
    assert l4b.sport == (sport or l4a.sport) and l4b.dport == (dport or l4a.dport)
    if TCP in a:
        assert (l4b.seq, l4b.ack, l4b.flags, l4b.window) == (l4a.seq, l4a.ack, l4a.flags,
                                                             l4a.window)
    assert bytes(b[Raw]) == bytes(a[Raw])
    assert_checksums_valid6(out)


@pytest.mark.parametrize("service", [WEB6, DNS6], ids=["tcp", "udp"])
def test_both_directions_are_rewritten_field_by_field(tmp_path, service):
    proto = service["proto"]
    request = client6("2001:db8::5", 40000, dport=service["port"], proto=proto)
    ip, port = expected_backend6(service, "2001:db8::5", 40000, MAGLEV_SIZE)
    reply = reply6(ip, port, "2001:db8::5", 40000, proto=proto)
    out = run_v6(tmp_path, [{"frontend": [request]}, {"backend": [reply]}])
    first, second = out["phases"]
    assert len(first["backend_out"]) == 1 and not first["frontend_out"]
    check_rewritten(request, first["backend_out"][0], dst=ip, dport=port)
    assert events(first) == {"to_backend": 1, "flows_created": 1, "tables_seen": 1}
    assert len(second["frontend_out"]) == 1
    check_rewritten(reply, second["frontend_out"][0], src=VIP, sport=service["port"])
    assert events(second)["to_client_by_flow"] == 1
    assert not drops(second)
    slot = next(b["slot"] for b in service["backends"] if b["ip"] == ip)
    assert second["backends"][str(slot)]["packets"] == 2
    assert second["backends"][str(slot)]["new_flows"] == 1
    assert second["backends"][str(slot)]["active_flows"] == 1
    [flow] = second["flows"]
    assert flow["family"] == 6 and flow["client"] == ["2001:db8::5", 40000]
    assert flow["vip"] == [VIP, service["port"]] and flow["backend"] == [ip, port]
    assert flow["state"] == ("tcp_syn" if proto == "tcp" else "udp")


def test_a_flow_keeps_its_backend_and_follows_tcp_states(tmp_path):
    client = "2001:db8::7"
    ip, port = expected_backend6(WEB6, client, 41000, MAGLEV_SIZE)
    out = run_v6(tmp_path, [{"frontend": [client6(client, 41000, flags="S"),
                                          client6(client, 41000, flags="A"),
                                          client6(client, 41000, flags="PA")]},
                            {"frontend": [client6(client, 41000, flags="FA")]}])
    first, second = out["phases"]
    assert [Ether(f)[IPv6].dst for f in first["backend_out"]] == [ip] * 3
    assert events(first)["flows_created"] == 1 and events(first)["to_backend"] == 3
    assert [f["state"] for f in first["flows"]] == ["tcp"]
    assert [f["state"] for f in second["flows"]] == ["tcp_fin"]


def test_a_reply_without_a_flow_is_rewritten_statelessly(tmp_path):
    reply = reply6("fd00:2::20", 5353, "2001:db8::9", 33333, proto="udp")
    out = run_v6(tmp_path, [{"backend": [reply]}])
    [phase] = out["phases"]
    check_rewritten(reply, phase["frontend_out"][0], src=VIP, sport=53)
    assert events(phase)["to_client_stateless"] == 1
    assert phase["services"]["1"]["packets"] == 1


def test_echo_request_to_a_vip_is_answered(tmp_path):
    request = Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src="2001:db8::5", dst=VIP, hlim=60) / \
        ICMPv6EchoRequest(id=0x1234, seq=7, data=b"ping6 payload")
    out = run_v6(tmp_path, [{"frontend": [request]}])
    [phase] = out["phases"]
    assert not phase["backend_out"]
    [answer] = phase["frontend_out"]
    pkt = Ether(answer)
    assert pkt[Ether].src == LB_MAC and pkt[Ether].dst == CLIENT_MAC
    assert pkt[IPv6].src == VIP and pkt[IPv6].dst == "2001:db8::5" and pkt[IPv6].hlim == 64
    assert ICMPv6EchoReply in pkt
    assert (pkt[ICMPv6EchoReply].id, pkt[ICMPv6EchoReply].seq, pkt[ICMPv6EchoReply].data) == \
        (0x1234, 7, b"ping6 payload")
    assert_checksums_valid6(answer)
    assert events(phase)["icmp_echo_replied"] == 1


def test_nd_ra_mld_and_other_ipv6_pass_byte_identical(tmp_path):
    solicited = "ff02::1:ff00:100"
    frames_in = [
        Ether(src=CLIENT_MAC, dst="33:33:ff:00:01:00") / IPv6(src="fe80::c1", dst=solicited,
                                                               hlim=255) /
        ICMPv6ND_NS(tgt=VIP) / ICMPv6NDOptSrcLLAddr(lladdr=CLIENT_MAC),
        Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src="fe80::c1", dst="fe80::1b", hlim=255) /
        ICMPv6ND_NA(tgt="fe80::c1", R=0, S=1, O=1),
        Ether(src=CLIENT_MAC, dst="33:33:00:00:00:01") / IPv6(src="fe80::1", dst="ff02::1",
                                                               hlim=255) / ICMPv6ND_RA(),
        Ether(src=CLIENT_MAC, dst="33:33:00:00:00:16") /
        IPv6(src="fe80::c1", dst="ff02::16", hlim=1) /
        IPv6ExtHdrHopByHop(options=[RouterAlert()]) / ICMPv6MLReport2(),
        # TCP and UDP to addresses and ports that are no service's:
        client6("2001:db8::5", 40000, dst="fd00::999"),
        client6("2001:db8::5", 40000, dport=81),
        client6("2001:db8::5", 40000, dport=80, proto="udp"),
        # An echo request to another address; an ICMPv6 error to a VIP
        # quoting a port of no service (unmatched: unchanged,
        # tests/test_icmp6_errors.py translates the others).
        Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src="2001:db8::5", dst="2001:db8::1") /
        ICMPv6EchoRequest(),
        Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src="2001:db8::fe", dst=VIP) /
        ICMPv6DestUnreach(code=4) / IPv6(src=VIP, dst="2001:db8::5") / UDP(sport=5999,
                                                                            dport=33000),
        # Another upper-layer protocol to a VIP (no next header).
        Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src="2001:db8::5", dst=VIP, nh=59),
    ]
    backend_in = [
        Ether(src=SERVER_MAC, dst="33:33:ff:00:00:10") /
        IPv6(src="fe80::5e", dst="ff02::1:ff00:10", hlim=255) / ICMPv6ND_NS(tgt="fd00:1::10"),
        reply6("fd00:9::1", 8080, "2001:db8::5", 40000),     # no backend of a service
    ]
    out = run_v6(tmp_path, [{"frontend": frames_in, "backend": backend_in}])
    [phase] = out["phases"]
    assert phase["backend_out"] == [bytes(f) for f in frames_in]
    assert phase["frontend_out"] == [bytes(f) for f in backend_in]
    assert events(phase)["passed_through"] == len(frames_in) + len(backend_in) - 1
    assert events(phase)["icmp_errors_unmatched"] == 1
    assert not drops(phase)


def hostile_chains(dst):
    base = IPv6(src="2001:db8::66", dst=dst)
    tcp = TCP(sport=40000, dport=80, flags="S")
    eth = Ether(src=CLIENT_MAC, dst=LB_MAC)
    nine = base
    for _ in range(9):
        nine = nine / IPv6ExtHdrDestOpt()
    truncated = bytes(eth / base / IPv6ExtHdrDestOpt() / tcp)
    # The destination options header claims 3 * 8 more bytes than the frame holds.
    cut = bytearray(truncated[:14 + 40 + 8])
    cut[14 + 40 + 1] = 3
    cut[14 + 4:14 + 6] = (8).to_bytes(2, "big")
    # A payload length beyond the frame.
    too_long = bytearray(bytes(eth / base / tcp))
    too_long[14 + 4:14 + 6] = (400).to_bytes(2, "big")
    return {
        "nine extension headers": ("ipv6_extension_chain", bytes(eth / nine / tcp)),
        "L4 beyond 256 bytes": ("ipv6_extension_chain", bytes(
            eth / IPv6(src="2001:db8::66", dst=dst, nh=60) /
            Raw(bytes([6, 31, 1, 252]) + bytes(252)) / tcp)),
        "truncated chain": ("ipv6_extension_chain", bytes(cut)),
        "hop-by-hop not first": ("ipv6_extension_chain",
                                 bytes(eth / base / IPv6ExtHdrDestOpt() /
                                       IPv6ExtHdrHopByHop() / tcp)),
        "routing with segments left": ("ipv6_extension_chain",
                                       bytes(eth / base / IPv6ExtHdrRouting(
                                           addresses=["2001:db8::77"], segleft=1) / tcp)),
        "payload length beyond the frame": ("malformed", bytes(too_long)),
        # A fragment no datagram can hold: more follow, but its 20 bytes
        # are not a multiple of 8 (tests/test_ipv6_fragments.py translates
        # the others).
        "fragment not a multiple of 8": ("ipv6_fragment", bytes(
            eth / base / IPv6ExtHdrFragment(m=1, id=9) / tcp)),
        "udp checksum 0": ("ipv6_udp_zero_checksum",
                           bytes(eth / IPv6(src="2001:db8::66", dst=dst) /
                                 UDP(sport=40000, dport=53, chksum=0) / Raw(b"q"))),
        "truncated tcp": ("malformed", bytes(eth / base / tcp)[:14 + 40 + 12]),
    }


def test_hostile_extension_chains_to_a_vip_are_dropped_by_reason(tmp_path):
    chains = hostile_chains(VIP)
    frames = [frame for _, frame in chains.values()]
    out = run_v6(tmp_path, [{"frontend": frames}])
    [phase] = out["phases"]
    assert not phase["backend_out"] and not phase["frontend_out"]
    want = collections.Counter(reason for reason, _ in chains.values())
    assert drops(phase) == dict(want)


def test_hostile_extension_chains_not_to_a_vip_pass_unchanged(tmp_path):
    chains = hostile_chains("2001:db8::abc")
    frames = [frame for _, frame in chains.values()]
    out = run_v6(tmp_path, [{"frontend": frames}])
    [phase] = out["phases"]
    assert phase["backend_out"] == frames
    assert not drops(phase)


def test_a_valid_extension_chain_is_walked_to_the_tcp_header(tmp_path):
    ext = (IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(),
           IPv6ExtHdrRouting(addresses=["2001:db8::77"], segleft=0), IPv6ExtHdrDestOpt())
    request = client6("2001:db8::5", 40001, ext=ext)
    ip, port = expected_backend6(WEB6, "2001:db8::5", 40001, MAGLEV_SIZE)
    out = run_v6(tmp_path, [{"frontend": [request]}])
    [phase] = out["phases"]
    [sent] = phase["backend_out"]
    check_rewritten(request, sent, dst=ip, dport=port)
    # The extension headers are kept, byte for byte.
    assert sent[14 + 40:14 + 40 + 40] == bytes(request)[14 + 40:14 + 40 + 40]


def test_weight_shares_and_the_exact_maglev_choice(tmp_path):
    clients = [(f"2001:db8:{i % 7:x}::{i:x}", 10000 + i) for i in range(600)]
    frames = [client6(ip, port) for ip, port in clients]
    out = run_v6(tmp_path, [{"frontend": frames}], flow_table_size=8192)
    [phase] = out["phases"]
    assert len(phase["backend_out"]) == len(frames)
    shares = collections.Counter()
    for (client, cport), sent in zip(clients, phase["backend_out"]):
        pkt = Ether(sent)
        assert (pkt[IPv6].dst, pkt[TCP].dport) == expected_backend6(WEB6, client, cport,
                                                                    MAGLEV_SIZE)
        shares[pkt[IPv6].dst] += 1
    ratio = shares["fd00:1::10"] / shares["fd00:1::11"]
    assert 1.6 < ratio < 2.5, shares
    assert events(phase)["flows_created"] == len(frames)


def test_a_backend_add_keeps_sessions_and_a_removal_moves_them(tmp_path):
    clients = [(f"2001:db8::{i:x}", 20000 + i) for i in range(1, 121)]
    added = dict(WEB6, backends=WEB6["backends"] + [
        {"ip": "fd00:1::12", "port": 8080, "weight": 10, "slot": 4}])
    removed = dict(added, backends=[b for b in added["backends"] if b["ip"] != "fd00:1::10"])
    acks = [client6(ip, port, flags="A") for ip, port in clients]

    def now_at(ip, port):
        """The flow's backend after the removal: its first one, unless that
        was removed, then the Maglev choice without it."""
        first = expected_backend6(WEB6, ip, port, MAGLEV_SIZE)[0]
        return first if first != "fd00:1::10" else expected_backend6(removed, ip, port,
                                                                      MAGLEV_SIZE)[0]

    out = run_v6(tmp_path, [
        {"frontend": [client6(ip, port) for ip, port in clients]},
        {"frontend": acks, "services": [added, DNS6]},
        {"frontend": [client6(f"2001:db8:1::{i:x}", 30000 + i) for i in range(1, 121)]},
        {"frontend": acks, "services": [removed, DNS6]},
        {"backend": [reply6(now_at(ip, port), 8080, ip, port, flags="A")
                     for ip, port in clients]},
    ])
    first, second, third, fourth = out["phases"][:4]
    before = {(Ether(f)[IPv6].src, Ether(f)[TCP].sport): Ether(f)[IPv6].dst
              for f in first["backend_out"]}
    after = {(Ether(f)[IPv6].src, Ether(f)[TCP].sport): Ether(f)[IPv6].dst
             for f in second["backend_out"]}
    assert before == after
    assert "flows_moved" not in events(second)
    # New flows reach the added backend.
    assert any(Ether(f)[IPv6].dst == "fd00:1::12" for f in third["backend_out"])
    # The removed backend's flows move to the service's current choice.
    moved = sum(1 for dst in before.values() if dst == "fd00:1::10")
    assert moved > 0 and events(fourth)["flows_moved"] - events(third).get("flows_moved", 0) \
        == moved
    for f in fourth["backend_out"]:
        pkt = Ether(f)
        assert pkt[IPv6].dst != "fd00:1::10"
        if before[(pkt[IPv6].src, pkt[TCP].sport)] != "fd00:1::10":
            assert pkt[IPv6].dst == before[(pkt[IPv6].src, pkt[TCP].sport)]
        assert_checksums_valid6(f)
    # The replies come from each flow's backend after the move and leave
    # as the VIP, through the flow (its reply checksum delta follows it).
    fifth = out["phases"][4]
    assert len(fifth["frontend_out"]) == len(clients)
    assert events(fifth)["to_client_by_flow"] == len(clients)
    assert "to_client_stateless" not in events(fifth)
    for f in fifth["frontend_out"]:
        pkt = Ether(f)
        assert (pkt[IPv6].src, pkt[TCP].sport) == (VIP, 80)
        assert_checksums_valid6(f)


def test_a_new_flow_takes_over_the_backend_side_tuple(tmp_path):
    shared = {"ip": "fd00:1::50", "port": 8080, "weight": 1}
    one = {"family": 6, "vip": VIP, "proto": "tcp", "port": 80, "service_id": 0,
           "backends": [dict(shared, slot=0)]}
    two = {"family": 6, "vip": VIP2, "proto": "tcp", "port": 80, "service_id": 1,
           "backends": [dict(shared, slot=1)]}
    out = run_v6(tmp_path, [
        {"frontend": [client6("2001:db8::5", 45000, dst=VIP)]},
        {"frontend": [client6("2001:db8::5", 45000, dst=VIP2)]},
        {"backend": [reply6("fd00:1::50", 8080, "2001:db8::5", 45000)]},
    ], services=[one, two])
    third = out["phases"][2]
    assert events(third)["flows_superseded"] == 1
    [answer] = third["frontend_out"]
    assert Ether(answer)[IPv6].src == VIP2
    assert len(third["flows"]) == 1 and third["flows"][0]["vip"] == [VIP2, 80]


def test_strict_mode_drops_clients_to_a_backend_address(tmp_path):
    out = run_v6(tmp_path, [{"frontend": [client6("2001:db8::5", 40000, dst="fd00:1::10",
                                                  dport=8080)]}], strict=True)
    [phase] = out["phases"]
    assert drops(phase) == {"strict": 1}


def test_an_ipv4_service_beside_ipv6_ones_keeps_working(tmp_path):
    request = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src="172.16.0.5", dst="10.0.0.100") / \
        TCP(sport=40000, dport=80, flags="S") / Raw(b"v4")
    out = run_v6(tmp_path, [{"frontend": [request, client6("2001:db8::5", 40000)]}])
    [phase] = out["phases"]
    v4 = [f for f in phase["backend_out"] if IP in Ether(f)]
    v6 = [f for f in phase["backend_out"] if IPv6 in Ether(f)]
    assert len(v4) == 1 and len(v6) == 1
    pkt = Ether(v4[0])
    assert (pkt[IP].dst, pkt[TCP].dport) == ("192.168.1.10", 8080)
    assert_checksums_valid(v4[0])
    assert events(phase)["flows_created"] == 2


def test_two_workers_translate_replies_that_arrive_on_the_other_workers_queue(tmp_path):
    clients = [(f"2001:db8:{i:x}::1", 50000 + i) for i in range(1, 41)]
    owners = [steering_owner6(ip, 2) for ip, _ in clients]
    assert set(owners) == {0, 1}
    requests = [[], []]
    for (ip, port), owner in zip(clients, owners):
        requests[owner].append(client6(ip, port))
    replies = [[], []]
    for (ip, port), owner in zip(clients, owners):
        bip, bport = expected_backend6(WEB6, ip, port, MAGLEV_SIZE)
        # Each reply on the queue of the worker that does not own it.
        replies[1 - owner].append(reply6(bip, bport, ip, port))
    out = run_v6(tmp_path, [{"frontend": requests}, {"backend": replies}], workers=2)
    first, second = out["phases"]
    assert events(first)["flows_created"] == len(clients)
    assert "handoff_sent" not in events(first)
    assert events(second)["to_client_by_flow"] == len(clients)
    assert "to_client_stateless" not in events(second)
    assert events(second)["handoff_sent"] == len(clients)
    assert len(second["frontend_out"]) == len(clients)
    for frame in second["frontend_out"]:
        assert Ether(frame)[IPv6].src == VIP
        assert_checksums_valid6(frame)
    assert {f["lcore"] for f in second["flows"]} == {1, 2}
