"""IPv6 fragments (the fragment header, next header 44) through net_pcap,
both directions: rplb translates them fragment by fragment, as IPv4's
(docs/fastpath.md, 3.1 and 3.2).  Every fragment is checked field by field
against the one sent; each datagram is reassembled here and its L4
checksum recomputed independently by scapy over the reassembled datagram.

Driven by tests/v6driver.py (the contract's spec rows), a process per run."""

import collections

from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from lbcheck import assert_checksums_valid6, expected_backend6, steering_owner6
from test_ipv6 import (CLIENT_MAC, DNS6, LB_MAC, MAGLEV_SIZE, SERVER_MAC, VIP, WEB6, drops,
                       events, run_v6)

IP6_AT = 14
FRAGMENT_AT = IP6_AT + 40
BODY_AT = FRAGMENT_AT + 8


def upper_layer(src, dst, sport, dport, size, seed, proto="udp"):
    """The bytes of a whole TCP/UDP segment (checksum over the IPv6
    pseudo-header, by scapy) of size payload bytes."""
    payload = bytes((i * 7 + seed) & 0xFF for i in range(size))
    l4 = UDP(sport=sport, dport=dport) if proto == "udp" else \
        TCP(sport=sport, dport=dport, flags="PA", seq=1000, ack=1)
    pkt = IPv6(src=src, dst=dst) / l4 / Raw(payload)
    return bytes(pkt[UDP] if proto == "udp" else pkt[TCP])


def fragments6(src, dst, nh, ident, data, size=1232, src_mac=CLIENT_MAC, hlim=61):
    """The frames of data's fragments (size bytes each, the last shorter),
    as a sender puts them on the wire: fixed header, fragment header,
    piece."""
    frames = []
    for offset in range(0, len(data), size):
        piece = data[offset:offset + size]
        more = int(offset + size < len(data))
        frames.append(bytes(Ether(src=src_mac, dst=LB_MAC) /
                            IPv6(src=src, dst=dst, hlim=hlim, tc=0x28, fl=0x12345) /
                            IPv6ExtHdrFragment(nh=nh, id=ident, offset=offset // 8, m=more) /
                            Raw(piece)))
    return frames


def udp_datagram(client, sport, ident, size=3000, dport=53, dst=VIP):
    return fragments6(client, dst, 17, ident, upper_layer(client, dst, sport, dport, size,
                                                          ident))


def offset_of(frame):
    return Ether(frame)[IPv6ExtHdrFragment].offset * 8


def ident_of(frame):
    return Ether(frame)[IPv6ExtHdrFragment].id


def by_datagram(frames):
    groups = collections.defaultdict(list)
    for frame in frames:
        groups[ident_of(frame)].append(frame)
    return groups


def reassemble(frames):
    """The datagram of frames as one whole frame (fixed header of the
    first, fragment header gone), the fragments checked to tile it exactly,
    only the last without M."""
    pieces = sorted((offset_of(f), f) for f in frames)
    data = b""
    for offset, frame in pieces:
        assert offset == len(data), f"hole or overlap at {offset} (have {len(data)})"
        data += frame[BODY_AT:]
    flags = [Ether(f)[IPv6ExtHdrFragment].m for _, f in pieces]
    assert flags == [1] * (len(pieces) - 1) + [0]
    first = Ether(pieces[0][1])
    return bytes(Ether(src=first.src, dst=first.dst) /
                 IPv6(src=first[IPv6].src, dst=first[IPv6].dst,
                      nh=first[IPv6ExtHdrFragment].nh, hlim=first[IPv6].hlim) / Raw(data))


def assert_fragment6(frame, sent, src=None, dst=None, port_at=None, port=None):
    """frame is the fragment sent with only the named address changed and,
    in a first fragment, the port at port_at (2: destination, 0: source)
    and the L4 checksum: every other byte as it came."""
    out, want = Ether(frame), Ether(sent)
    assert len(frame) == len(sent)
    assert frame[:12] == sent[:12], "MACs"
    assert (out[IPv6].version, out[IPv6].tc, out[IPv6].fl, out[IPv6].plen, out[IPv6].nh,
            out[IPv6].hlim) == (want[IPv6].version, want[IPv6].tc, want[IPv6].fl,
                                want[IPv6].plen, want[IPv6].nh, want[IPv6].hlim)
    assert out[IPv6].src == (src or want[IPv6].src)
    assert out[IPv6].dst == (dst or want[IPv6].dst)
    assert frame[FRAGMENT_AT:BODY_AT] == sent[FRAGMENT_AT:BODY_AT], "fragment header"
    body, sent_body = frame[BODY_AT:], sent[BODY_AT:]
    if offset_of(sent) != 0 or port_at is None:
        assert body == sent_body
        return
    assert int.from_bytes(body[port_at:port_at + 2], "big") == port
    other = 2 - port_at
    assert body[other:other + 2] == sent_body[other:other + 2]
    cksum_at = 6 if want[IPv6ExtHdrFragment].nh == 17 else 16
    assert body[4:cksum_at] == sent_body[4:cksum_at]
    assert body[cksum_at + 2:] == sent_body[cksum_at + 2:]


def check_to_backend(out_frames, sent_frames, service, client, sport):
    """One datagram's fragments as they left to its Maglev backend."""
    ip, port = expected_backend6(service, client, sport, MAGLEV_SIZE)
    sent_by_offset = {offset_of(f): f for f in sent_frames}
    assert sorted(offset_of(f) for f in out_frames) == sorted(sent_by_offset)
    for frame in out_frames:
        assert_fragment6(frame, sent_by_offset[offset_of(frame)], dst=ip, port_at=2, port=port)
    assert_checksums_valid6(reassemble(out_frames))
    return ip, port


def check_to_client(out_frames, sent_frames, vport):
    sent_by_offset = {offset_of(f): f for f in sent_frames}
    assert sorted(offset_of(f) for f in out_frames) == sorted(sent_by_offset)
    for frame in out_frames:
        assert_fragment6(frame, sent_by_offset[offset_of(frame)], src=VIP, port_at=0,
                         port=vport)
    assert_checksums_valid6(reassemble(out_frames))


def test_fragments_in_order_reverse_and_interleaved_are_translated(tmp_path):
    """Three UDP datagrams of 3,000 bytes to the VIP, three fragments each:
    one in order, one in reverse order (its first fragment last: the
    others wait for it), one interleaved with the first."""
    a = udp_datagram("2001:db8::a", 40001, 0x10001)
    b = udp_datagram("2001:db8::b", 40002, 0x10002)
    c = udp_datagram("2001:db8::c", 40003, 0x10003)
    frames = [a[0], c[0], a[1], c[1], a[2], c[2]] + b[::-1]
    out = run_v6(tmp_path, [{"frontend": frames}])
    [phase] = out["phases"]
    assert not phase["frontend_out"] and len(phase["backend_out"]) == 9
    groups = by_datagram(phase["backend_out"])
    check_to_backend(groups[0x10001], a, DNS6, "2001:db8::a", 40001)
    check_to_backend(groups[0x10002], b, DNS6, "2001:db8::b", 40002)
    check_to_backend(groups[0x10003], c, DNS6, "2001:db8::c", 40003)
    # Interleaved, a's and c's fragments leave in the order they came.
    assert [ident_of(f) for f in phase["backend_out"][:6]] == [0x10001, 0x10003] * 3
    assert events(phase) == {"to_backend": 9, "flows_created": 3, "fragments_held": 2,
                             "tables_seen": 1}
    assert not drops(phase)
    assert phase["backends"]["2"]["packets"] == 9
    assert phase["backends"]["2"]["bytes"] == sum(len(f) for f in frames)


def test_tcp_fragments_and_the_backends_fragmented_replies(tmp_path):
    """A TCP segment in fragments opens a flow to its backend; the
    backend's reply its kernel fragmented goes back to the client from
    vip:80 in every fragment (by the flow), held fragments included.  A
    reply without a flow (a backend of one service) is translated
    statelessly."""
    client, sport = "2001:db8::d", 40004
    request = fragments6(client, VIP, 6, 0x20001,
                         upper_layer(client, VIP, sport, 80, 2500, 1, proto="tcp"))
    ip, port = expected_backend6(WEB6, client, sport, MAGLEV_SIZE)
    reply = fragments6(ip, client, 6, 0x30001,
                       upper_layer(ip, client, port, sport, 4000, 2, proto="tcp"),
                       src_mac=SERVER_MAC)
    stateless = fragments6("fd00:2::20", "2001:db8::e", 17, 0x30002,
                           upper_layer("fd00:2::20", "2001:db8::e", 5353, 33333, 2000, 3),
                           src_mac=SERVER_MAC)
    out = run_v6(tmp_path, [{"frontend": request[1:] + request[:1]},
                            {"backend": [reply[1], reply[0]] + reply[2:] + stateless[::-1]}])
    first, second = out["phases"]
    check_to_backend(first["backend_out"], request, WEB6, client, sport)
    assert events(first)["flows_created"] == 1 and events(first)["to_backend"] == 3
    [flow] = first["flows"]
    assert flow["family"] == 6 and flow["backend"] == [ip, port]
    groups = by_datagram(second["frontend_out"])
    check_to_client(groups[0x30001], reply, 80)
    check_to_client(groups[0x30002], stateless, 53)
    assert events(second)["to_client_by_flow"] == len(reply)
    assert events(second)["to_client_stateless"] == len(stateless)
    # (The counters add up over the phases: 2 held in the first.)
    assert events(second)["fragments_held"] == 2 + 1 + len(stateless) - 1
    assert not drops(second)
    slot = next(b["slot"] for b in WEB6["backends"] if b["ip"] == ip)
    assert second["backends"][str(slot)]["packets"] == len(request) + len(reply)
    assert second["services"]["1"]["packets"] == len(stateless)


def test_duplicated_and_overlapping_fragments(tmp_path):
    """A duplicate is dropped alone; a fragment overlapping part of what
    came drops itself and the rest of its datagram (what left before it
    left)."""
    dup = udp_datagram("2001:db8::f", 40005, 0x40001)
    over = udp_datagram("2001:db8::10", 40006, 0x40002)
    # Bytes [1224, 1240): half in the first fragment, half in the second.
    overlapping = bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) /
                        IPv6(src="2001:db8::10", dst=VIP, hlim=61) /
                        IPv6ExtHdrFragment(nh=17, id=0x40002, offset=1224 // 8, m=1) /
                        Raw(b"x" * 16))
    frames = [dup[0], dup[1], dup[1], dup[0], dup[2], over[0], overlapping, over[1], over[2]]
    out = run_v6(tmp_path, [{"frontend": frames}])
    [phase] = out["phases"]
    groups = by_datagram(phase["backend_out"])
    check_to_backend(groups[0x40001], dup, DNS6, "2001:db8::f", 40005)
    assert [offset_of(f) for f in groups[0x40002]] == [0]
    assert drops(phase) == {"fragment_duplicate": 2, "fragment_overlap": 3}


def test_incomplete_datagrams_time_out_and_free_what_they_hold(tmp_path):
    """Last fragment missing: the others left, and the datagram is
    forgotten after the timeout (1 s here).  First fragment missing: the
    others wait, and are freed and counted at the timeout."""
    no_last = udp_datagram("2001:db8::11", 40007, 0x50001, size=5000)[:-1]
    no_first = udp_datagram("2001:db8::12", 40008, 0x50002, size=5000)[1:]
    out = run_v6(tmp_path, [{"frontend": no_last + no_first, "linger_s": 2.5}],
                 fragments={"datagrams": 64, "held": 32, "timeout": 1})
    [phase] = out["phases"]
    assert sorted(offset_of(f) for f in phase["backend_out"]) == [0, 1232, 2464, 3696]
    assert events(phase)["fragments_held"] == 4
    assert events(phase)["fragment_datagrams_timed_out"] == 2
    assert drops(phase) == {"fragment_timeout": 4}
    # (run_v6: every mbuf back in the pool.)


def test_floods_take_bounded_room_and_return_every_mbuf(tmp_path):
    """600 first fragments never completed, with room for 64 datagrams:
    each leaves translated, the oldest datagram makes room for the next,
    nothing is held.  Then 300 later fragments whose first never comes,
    with room for 32 held: at most 32 wait, the rest are dropped, and all
    of them are counted."""
    firsts = [udp_datagram(f"2001:db8:1::{i + 1:x}", 41000, 0x60000 + i)[0] for i in range(600)]
    laters = [udp_datagram(f"2001:db8:2::{i + 1:x}", 42000, 0x70000 + i)[1] for i in range(300)]
    out = run_v6(tmp_path, [{"frontend": firsts}, {"frontend": laters}],
                 fragments={"datagrams": 64, "held": 32, "timeout": 5})
    flood, later = out["phases"]
    assert len(flood["backend_out"]) == 600
    assert events(flood)["fragment_datagrams_evicted"] == 600 - 64
    assert events(flood)["fragment_datagrams_timed_out"] == 64         # flushed at stop
    assert "fragments_held" not in events(flood)
    assert not later["backend_out"]
    dropped = drops(later)
    held = events(later)["fragments_held"]
    assert 32 <= held <= 300
    assert dropped["fragment_no_room"] + dropped["fragment_timeout"] == 300
    assert dropped["fragment_timeout"] <= 32


def test_fragments_not_for_the_load_balancer_pass_at_once(tmp_path):
    """To an address that is no VIP (clients' side), from one that is no
    backend (backends' side), or to another port of a VIP: unchanged,
    never held by the first two, passed with their datagram by the last."""
    to_other = udp_datagram("2001:db8::13", 43000, 0x80001, dst="2001:db8::999")
    from_other = fragments6("fd00:9::1", "2001:db8::13", 17, 0x80002, bytes(2500),
                            src_mac=SERVER_MAC)
    other_port = udp_datagram("2001:db8::14", 43001, 0x80003, dport=9999)
    out = run_v6(tmp_path, [{"frontend": to_other[1:] + other_port[::-1],
                             "backend": from_other[1:]}])
    [phase] = out["phases"]
    assert phase["backend_out"][:2] == to_other[1:]
    assert sorted(phase["backend_out"][2:]) == sorted(other_port)
    assert phase["frontend_out"] == from_other[1:]
    assert events(phase)["fragments_held"] == 2
    assert events(phase)["passed_through"] == 2 + 3 + 2
    assert not drops(phase)


def test_a_fragmented_ping_of_a_vip_is_answered(tmp_path):
    request = IPv6(src="2001:db8::15", dst=VIP) / \
        ICMPv6EchoRequest(id=0x4242, seq=7, data=bytes(i % 256 for i in range(3000)))
    sent = fragments6("2001:db8::15", VIP, 58, 0x90001, bytes(request[ICMPv6EchoRequest]))
    out = run_v6(tmp_path, [{"frontend": [sent[1], sent[0], sent[2]]}])
    [phase] = out["phases"]
    assert not phase["backend_out"] and len(phase["frontend_out"]) == 3
    for frame in phase["frontend_out"]:
        original = next(f for f in sent if offset_of(f) == offset_of(frame))
        pkt = Ether(frame)
        assert (pkt.src, pkt.dst) == (LB_MAC, CLIENT_MAC)
        assert (pkt[IPv6].src, pkt[IPv6].dst, pkt[IPv6].hlim) == (VIP, "2001:db8::15", 64)
        assert frame[FRAGMENT_AT:BODY_AT] == original[FRAGMENT_AT:BODY_AT]
        if offset_of(frame) != 0:
            assert frame[BODY_AT:] == original[BODY_AT:]
    whole = Ether(reassemble(phase["frontend_out"]))
    assert_checksums_valid6(bytes(whole))
    assert whole.haslayer("ICMPv6EchoReply")
    assert events(phase)["icmp_echo_replied"] == 3


def test_an_atomic_fragment_is_a_whole_packet(tmp_path):
    """Offset 0 and no more fragments (RFC 6946): translated at once,
    never held, its fragment header kept."""
    data = upper_layer("2001:db8::16", VIP, 43002, 53, 100, 9)
    [sent] = fragments6("2001:db8::16", VIP, 17, 0xA0001, data, size=4096)
    out = run_v6(tmp_path, [{"frontend": [sent]}])
    [phase] = out["phases"]
    [frame] = phase["backend_out"]
    ip, port = expected_backend6(DNS6, "2001:db8::16", 43002, MAGLEV_SIZE)
    assert_fragment6(frame, sent, dst=ip, port_at=2, port=port)
    assert_checksums_valid6(frame)
    assert "fragments_held" not in events(phase) and events(phase)["to_backend"] == 1


def test_a_first_fragment_for_a_service_without_backend_drops_its_datagram(tmp_path):
    services = [{**DNS6, "backends": [{**DNS6["backends"][0], "weight": 0}]}]
    sent = udp_datagram("2001:db8::17", 43003, 0xB0001)
    out = run_v6(tmp_path, [{"frontend": sent[2:] + sent[:2]}], services=services)
    [phase] = out["phases"]
    assert not phase["backend_out"]
    assert drops(phase) == {"no_backend": len(sent)}


def test_with_two_workers_every_fragment_meets_its_owner(tmp_path):
    """Each fragment of a datagram on a different worker's queue: those
    received by the worker that does not own the client are handed over
    (steered by the client address, which every fragment carries), and
    the owner translates them all."""
    clients = [f"2001:db8:3::{i + 1:x}" for i in range(8)]
    queues = [[], []]
    sent = {}
    for n, client in enumerate(clients):
        frames = udp_datagram(client, 44000 + n, 0xC0000 + n)
        sent[0xC0000 + n] = (client, 44000 + n, frames)
        for i, frame in enumerate(frames[::-1]):
            queues[(n + i) % 2].append(frame)
    out = run_v6(tmp_path, [{"frontend": queues}], workers=2)
    [phase] = out["phases"]
    groups = by_datagram(phase["backend_out"])
    assert sorted(groups) == sorted(sent)
    for ident, (client, sport, frames) in sent.items():
        check_to_backend(groups[ident], frames, DNS6, client, sport)
    assert events(phase)["handoff_sent"] == events(phase)["handoff_received"] > 0
    assert not drops(phase)
    owners = {steering_owner6(client, 2) for client in clients}
    assert owners == {0, 1}
