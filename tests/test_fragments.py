"""IPv4 fragments through net_pcap, both directions: rplb translates them
fragment by fragment (docs/fastpath.md, 3.1).  Every fragment is
checked field by field against the one sent, and each datagram reassembled
here and its checksum recomputed independently."""

import ipaddress
import json
import os
import struct
import subprocess

import pytest
import yaml
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw
from scapy.utils import checksum

from harness import run_rplb
from lbcheck import expected_backend
from rplb import config as rplb_config
from rplb import sizing

CLIENT_MAC, LB_MAC, SERVER_MAC = "02:00:00:00:00:c1", "02:00:00:00:00:1b", "02:00:00:00:00:5e"
VIP = "10.0.0.100"
MAGLEV_SIZE = 251
DNS = {"name": "dns", "vip": VIP, "proto": "udp", "port": 53, "backends": [
    {"ip": "192.168.2.20", "port": 5353}, {"ip": "192.168.2.21", "port": 5353}]}
WEB = {"name": "web", "vip": VIP, "proto": "tcp", "port": 80, "backends": [
    {"ip": "192.168.1.10", "port": 8080}, {"ip": "192.168.1.11", "port": 8080}]}
SERVICES = [DNS, WEB]
IP_AT = 14


def lb_run(tmp_path, frontend=(), backend=(), services=SERVICES, extra=(), duration=0.7,
           **top):
    path = tmp_path / "services.yaml"
    path.write_text(yaml.safe_dump({"maglev_table_size": MAGLEV_SIZE, "flow_table_size": 4096,
                                    **top, "services": services}))
    run = run_rplb(tmp_path, [bytes(f) for f in frontend], [bytes(b) for b in backend],
                   rplb_args=["--config", str(path), *extra], duration=duration)
    assert run.rc == 0, run.stderr
    assert run.stats["mbufs_in_use_at_exit"] == 0
    return run


def datagram(src, sport, size, ip_id, proto="udp", dst=VIP, dport=None, flags=0, **ip):
    payload = bytes((i * 7 + ip_id) & 0xFF for i in range(size))
    l4 = UDP(sport=sport, dport=dport or 53) if proto == "udp" else \
        TCP(sport=sport, dport=dport or 80, flags="PA", seq=1000, ack=1)
    return IP(src=src, dst=dst, id=ip_id, flags=flags, ttl=61, **ip) / l4 / Raw(payload)


def fragments_of(pkt, size=512, src_mac=CLIENT_MAC):
    """The frames of pkt's fragments (payloads of `size` bytes, the last
    shorter), as its sender would put them on the wire."""
    return [Ether(src=src_mac, dst=LB_MAC) / f for f in fragment(pkt, fragsize=size)]


def ip_of(frame):
    return Ether(frame)[IP]


def offset_of(frame):
    return ip_of(frame).frag * 8


def reassemble(frames):
    """(first fragment's IPv4 header as scapy IP, the datagram's payload):
    by offsets, checking that the fragments tile it exactly."""
    pieces = sorted((offset_of(f), bytes(ip_of(f).payload)[:ip_of(f).len - ip_of(f).ihl * 4],
                     ip_of(f)) for f in frames)
    data, first = b"", None
    for offset, payload, ip in pieces:
        assert offset == len(data), f"hole or overlap at {offset} (have {len(data)})"
        data += payload
        first = first or ip
    assert not pieces[-1][2].flags.MF and all(p[2].flags.MF for p in pieces[:-1])
    return first, data


def l4_checksum_ok(ip, proto, l4):
    """The L4 checksum of a whole datagram (UDP's 0 means none), recomputed
    here from the pseudo-header: the sum over it and the segment is 0."""
    if proto == 17 and struct.unpack("!H", l4[6:8])[0] == 0:
        return True
    pseudo = (ipaddress.IPv4Address(ip.src).packed + ipaddress.IPv4Address(ip.dst).packed
              + struct.pack("!BBH", 0, proto, len(l4)))
    return checksum(pseudo + l4) == 0


def assert_fragment_ipv4(frame, sent, **changed):
    """Every IPv4 field of an output fragment is the sent one's (ID, DF and
    MF, offset, TTL, TOS, length, protocol), but those in changed; its
    header checksum is right."""
    out, want = ip_of(frame), ip_of(bytes(sent))
    for name in ("version", "ihl", "tos", "len", "id", "flags", "frag", "ttl", "proto",
                 "src", "dst"):
        assert getattr(out, name) == changed.get(name, getattr(want, name)), name
    header = bytes(frame)[IP_AT:IP_AT + out.ihl * 4]
    assert checksum(header) == 0, "IPv4 header checksum"


def by_datagram(frames):
    groups = {}
    for f in frames:
        groups.setdefault(ip_of(f).id, []).append(f)
    return groups


def check_translated_to_backend(out_frames, sent_frames, service, client, sport):
    """out_frames: one datagram's fragments as they left to the backend."""
    backend_ip, backend_port = expected_backend(service, client, sport, MAGLEV_SIZE)
    sent_by_offset = {offset_of(bytes(f)): bytes(f) for f in sent_frames}
    assert sorted(offset_of(f) for f in out_frames) == sorted(sent_by_offset)
    for frame in out_frames:
        sent = sent_by_offset[offset_of(frame)]
        assert frame[:12] == sent[:12]                       # MACs unchanged
        assert_fragment_ipv4(frame, sent, dst=backend_ip)
        ihl = ip_of(frame).ihl * 4
        body, sent_body = frame[IP_AT + ihl:], sent[IP_AT + ihl:]
        if offset_of(frame) == 0:    # ports and checksum only in the first
            assert body[:2] == sent_body[:2]
            assert struct.unpack("!H", body[2:4])[0] == backend_port
            cksum_at = 6 if ip_of(frame).proto == 17 else 16
            assert body[4:cksum_at] == sent_body[4:cksum_at]
            assert body[cksum_at + 2:] == sent_body[cksum_at + 2:]
        else:
            assert body == sent_body
    first, data = reassemble(out_frames)
    assert l4_checksum_ok(first, first.proto, data), "L4 checksum of the reassembled datagram"
    return backend_ip, backend_port


def test_fragments_in_order_reverse_and_interleaved_are_translated(tmp_path):
    """Three UDP datagrams of 3,000 bytes to the VIP, six fragments each:
    one in order, one in reverse order (its first fragment last: the others
    wait for it), one interleaved with the first.  Every fragment leaves
    to the datagram's Maglev backend, rewritten (destination address in
    each, port and checksum in the first) and otherwise unchanged, ID and
    DF included."""
    in_order = fragments_of(datagram("203.0.113.7", 40001, 3000, 0x1001, flags="DF"))
    reverse = fragments_of(datagram("203.0.113.8", 40002, 3000, 0x1002))[::-1]
    interleaved = fragments_of(datagram("203.0.113.9", 40003, 3000, 0x1003))
    mixed = [f for pair in zip(in_order, interleaved) for f in pair]
    run = lb_run(tmp_path, frontend=mixed + reverse)
    assert run.frontend_out == []
    groups = by_datagram(run.backend_out)
    for frames, client, sport, ip_id in ((in_order, "203.0.113.7", 40001, 0x1001),
                                         (reverse, "203.0.113.8", 40002, 0x1002),
                                         (interleaved, "203.0.113.9", 40003, 0x1003)):
        check_translated_to_backend(groups[ip_id], frames, DNS, client, sport)
    # The DF bit came through (scapy's fragment() keeps it in every piece).
    assert all(ip_of(f).flags.DF for f in groups[0x1001])
    # Those that waited: leave in order after the first fragment.
    assert [offset_of(f) for f in groups[0x1002]] == [0] + [offset_of(bytes(f))
                                                              for f in reverse[:-1]]
    events, drops = run.stats["events"], run.stats["drops"]
    assert events["to_backend"] == 18 and events["flows_created"] == 3
    assert events["fragments_held"] == 5
    assert sum(drops.values()) == 0
    dns = next(s for s in run.stats["services"] if s["service"] == "dns")
    assert dns["packets"] == 18          # every fragment counted under its backend


def test_tcp_fragments_are_translated_like_udp(tmp_path):
    sent = fragments_of(datagram("203.0.113.10", 40010, 2000, 0x2001, proto="tcp"), size=800)
    run = lb_run(tmp_path, frontend=sent)
    check_translated_to_backend(run.backend_out, sent, WEB, "203.0.113.10", 40010)
    assert run.stats["events"]["flows_created"] == 1


def test_duplicated_fragments_are_dropped_once_seen(tmp_path):
    """Copies of fragments that came, and a fragment wholly inside what came
    (bytes 504-519 of the first two fragments' 0-1023, other bytes: the
    receiver would keep the first copy, Linux's rule): dropped alone, the
    datagram completes."""
    sent = fragments_of(datagram("203.0.113.11", 40011, 2000, 0x3001))
    inside = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(
        src="203.0.113.11", dst=VIP, id=0x3001, flags="MF", frag=63, proto=17) / Raw(b"i" * 16)
    arrival = [sent[0], sent[1], sent[1], inside, sent[2], sent[0], sent[3]]
    run = lb_run(tmp_path, frontend=arrival)
    check_translated_to_backend(run.backend_out, sent, DNS, "203.0.113.11", 40011)
    assert run.stats["drops"]["fragment_duplicate"] == 3


def test_an_overlapping_fragment_drops_its_datagram(tmp_path):
    """After Linux's rule: a fragment that overlaps part of what came
    before (bytes 1016-1039, across the end of the first two fragments'
    1024) drops the datagram, it and every fragment after it; those that
    left before it cannot be reassembled without the rest.  (A fragment
    wholly inside what came is a duplicate: dropped alone, the next test.)"""
    sent = fragments_of(datagram("203.0.113.12", 40012, 2000, 0x4001))
    overlapping = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(
        src="203.0.113.12", dst=VIP, id=0x4001, flags="MF", frag=127, proto=17) / Raw(b"o" * 24)
    other = fragments_of(datagram("203.0.113.13", 40013, 1500, 0x4002))
    run = lb_run(tmp_path, frontend=[sent[0], sent[1], overlapping, sent[2], sent[3]] + other)
    groups = by_datagram(run.backend_out)
    assert sorted(offset_of(f) for f in groups[0x4001]) == [0, 512]
    check_translated_to_backend(groups[0x4002], other, DNS, "203.0.113.13", 40013)
    assert run.stats["drops"]["fragment_overlap"] == 3


def test_a_datagram_disagreeing_on_its_end_is_dropped(tmp_path):
    sent = fragments_of(datagram("203.0.113.14", 40014, 2000, 0x4101))
    early_end = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(
        src="203.0.113.14", dst=VIP, id=0x4101, frag=128, proto=17) / Raw(b"e" * 8)
    run = lb_run(tmp_path, frontend=[sent[0], sent[-1], early_end, sent[1]])
    assert sorted(offset_of(f) for f in run.backend_out) == [0, offset_of(bytes(sent[-1]))]
    assert run.stats["drops"]["fragment_overlap"] == 2


def test_incomplete_datagrams_time_out_and_free_what_they_hold(tmp_path):
    """Last fragment missing: the others left; the datagram is forgotten
    after the timeout (1 s here).  First fragment missing: the others wait,
    and are freed and counted at the timeout."""
    no_last = fragments_of(datagram("203.0.113.15", 40015, 2000, 0x5001))[:-1]
    no_first = fragments_of(datagram("203.0.113.16", 40016, 2000, 0x5002))[1:]
    run = lb_run(tmp_path, frontend=no_last + no_first, duration=3.0,
                 fragments={"timeout": 1})
    assert sorted(offset_of(f) for f in run.backend_out) == [0, 512, 1024]
    assert run.stats["events"]["fragments_held"] == 3
    assert run.stats["events"]["fragment_datagrams_timed_out"] == 2
    assert run.stats["drops"]["fragment_timeout"] == 3


def test_a_fragment_held_over_bursts_meets_its_first(tmp_path):
    """The first fragment comes two rx bursts after the others."""
    sent = fragments_of(datagram("203.0.113.17", 40017, 2000, 0x5101))
    filler = [Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=f"10.9.0.{i}")
              for i in range(130)]
    run = lb_run(tmp_path, frontend=sent[1:] + filler + sent[:1])
    translated = [f for f in run.backend_out if Ether(f).type == 0x0800]
    check_translated_to_backend(translated, sent, DNS, "203.0.113.17", 40017)


def test_a_flood_of_first_fragments_takes_bounded_room(tmp_path):
    """2,000 first fragments, none ever completed, with room for 64
    datagrams: each one leaves translated (a first fragment is never
    held), the oldest datagram makes room for the next, and nothing is
    held, so no mbuf stays out of the pool."""
    firsts = [fragments_of(datagram(f"100.64.{i // 250}.{i % 250 + 1}", 41000, 1200,
                                    0x6000 + i))[0] for i in range(2000)]
    run = lb_run(tmp_path, frontend=firsts, fragments={"datagrams": 64, "held": 32},
                 duration=1.5)
    assert len(run.backend_out) == 2000
    events = run.stats["events"]
    assert events["fragment_datagrams_evicted"] == 2000 - 64
    assert events["fragment_datagrams_timed_out"] == 64        # flushed at stop
    assert events["fragments_held"] == 0


def test_a_flood_of_fragments_whose_first_never_comes_cannot_drain_the_pool(tmp_path):
    """3,000 later fragments of datagrams whose first never comes, then 200
    ordinary datagrams, with a pool just large enough for the rings, the
    bursts and 32 held fragments: at most 32 are held at once (the rest
    refused, or freed when their datagram makes room for a newer one), so
    every ordinary datagram still gets an mbuf and leaves."""
    held, descriptors = 32, 256
    need = sizing.mbufs_needed(4095, ports=2, queues_per_port=1, workers=1,
                               rx_descriptors=descriptors, tx_descriptors=descriptors,
                               burst=64, fragments_held=held)
    mbufs = need.total + 1
    assert sizing.check_mbufs(mbufs, sizing.mbufs_needed(
        mbufs, ports=2, queues_per_port=1, workers=1, rx_descriptors=descriptors,
        tx_descriptors=descriptors, burst=64, fragments_held=held)) is None
    later = [Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src="198.18.0.1", dst=VIP, id=i, frag=64,
                                                    flags="MF", proto=17) / Raw(b"x" * 512)
             for i in range(3000)]
    ordinary = [Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src="203.0.113.20", dst=VIP)
                / UDP(sport=42000 + i, dport=53) / Raw(b"ok") for i in range(200)]
    run = lb_run(tmp_path, frontend=later + ordinary, duration=2.0,
                 extra=["--mbufs", str(mbufs), "--descriptors", str(descriptors)],
                 fragments={"datagrams": 64, "held": held})
    assert len(run.backend_out) == 200
    assert all(UDP in Ether(f) and Ether(f)[UDP].dport == 5353 for f in run.backend_out)
    events, drops = run.stats["events"], run.stats["drops"]
    # Each ended dropped: refused or evicted (no room), or flushed at stop.
    assert drops["fragment_no_room"] + drops["fragment_timeout"] == 3000
    assert drops["fragment_timeout"] <= held and events["fragments_held"] >= held
    assert run.stats["ports"][0]["ethdev"]["rx_nombuf"] == 0


def udp_reply_fragments(backend, client, cport, size, ip_id):
    reply = IP(src=backend["ip"], dst=client, id=ip_id, ttl=64) \
        / UDP(sport=backend["port"], dport=cport) / Raw(bytes(i % 251 for i in range(size)))
    return fragments_of(reply, size=1480, src_mac=SERVER_MAC)


def check_reply_fragments(out_frames, sent, vip, vport):
    sent_by_offset = {offset_of(bytes(f)): bytes(f) for f in sent}
    assert sorted(offset_of(f) for f in out_frames) == sorted(sent_by_offset)
    for frame in out_frames:
        original = sent_by_offset[offset_of(frame)]
        assert_fragment_ipv4(frame, original, src=vip)
        ihl = ip_of(frame).ihl * 4
        body, sent_body = frame[IP_AT + ihl:], original[IP_AT + ihl:]
        if offset_of(frame) == 0:
            assert struct.unpack("!H", body[:2])[0] == vport
            assert body[2:6] == sent_body[2:6] and body[8:] == sent_body[8:]
        else:
            assert body == sent_body
    first, data = reassemble(out_frames)
    assert l4_checksum_ok(first, 17, data)


def test_replies_the_backends_kernel_fragmented_leave_from_the_vip(tmp_path):
    """A UDP request makes the flow; its backend answers with 6,000 bytes,
    which the backend's kernel cut in five fragments: every fragment leaves
    with the VIP as its source, the first also with the service's port.
    A reply of a backend without a flow (one service owns it) is rewritten
    the same way, statelessly."""
    client = "203.0.113.30"
    request = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=client, dst=VIP) \
        / UDP(sport=43000, dport=53) / Raw(b"query")
    backend_ip, backend_port = expected_backend(DNS, client, 43000, MAGLEV_SIZE)
    backend = {"ip": backend_ip, "port": backend_port}
    by_flow = udp_reply_fragments(backend, client, 43000, 6000, 0x7001)
    stateless = udp_reply_fragments(DNS["backends"][0], "203.0.113.31", 43001, 3000, 0x7002)
    run = lb_run(tmp_path, frontend=[request], backend=by_flow + stateless[::-1])
    groups = by_datagram(run.frontend_out)
    check_reply_fragments(groups[0x7001], by_flow, VIP, 53)
    check_reply_fragments(groups[0x7002], stateless, VIP, 53)
    events = run.stats["events"]
    assert events["to_client_by_flow"] == len(by_flow)
    assert events["to_client_stateless"] == len(stateless)
    assert events["fragments_held"] == len(stateless) - 1


def test_fragments_not_for_the_load_balancer_pass_at_once(tmp_path):
    """To an address that is no VIP (clients' side) or from one that is no
    backend (backends' side): unchanged, never held, even when their first
    fragment never comes."""
    to_other = fragments_of(datagram("203.0.113.40", 44000, 2000, 0x8001, dst="10.9.9.9"))
    from_other = fragments_of(IP(src="192.168.7.7", dst="203.0.113.40", id=0x8002)
                              / UDP(sport=1, dport=2) / Raw(b"r" * 2000), src_mac=SERVER_MAC)
    run = lb_run(tmp_path, frontend=to_other[1:], backend=from_other[1:])
    assert run.backend_out == [bytes(f) for f in to_other[1:]]
    assert run.frontend_out == [bytes(f) for f in from_other[1:]]
    assert run.stats["events"]["fragments_held"] == 0
    assert run.stats["events"]["passed_through"] == len(to_other) + len(from_other) - 2


def test_fragments_to_another_port_of_a_vip_pass_with_their_datagram(tmp_path):
    sent = fragments_of(datagram("203.0.113.41", 44001, 2000, 0x8101, dport=9999))
    run = lb_run(tmp_path, frontend=sent[::-1])
    assert sorted(run.backend_out) == sorted(bytes(f) for f in sent)
    assert run.stats["events"]["passed_through"] == len(sent)


def test_a_fragmented_ping_of_a_vip_is_answered(tmp_path):
    """ping -s 4000: three fragments; each is answered as it comes (the
    reply's ICMP checksum changes by its type alone, in the first), from
    the VIP, with the request's ID and flags, and the reply reassembles
    into a valid echo reply carrying the request's data."""
    request = IP(src="203.0.113.50", dst=VIP, id=0x9001, ttl=55) \
        / ICMP(type=8, id=0x4242, seq=7) / Raw(bytes(i % 256 for i in range(4000)))
    sent = fragments_of(request, size=1480)
    run = lb_run(tmp_path, frontend=[sent[1], sent[0], sent[2]])
    assert run.backend_out == [] and len(run.frontend_out) == 3
    for frame in run.frontend_out:
        original = next(bytes(f) for f in sent if offset_of(bytes(f)) == offset_of(frame))
        out = Ether(frame)
        assert (out.src, out.dst) == (LB_MAC, CLIENT_MAC)
        assert_fragment_ipv4(frame, original, src=VIP, dst="203.0.113.50", ttl=64)
    first, data = reassemble(run.frontend_out)
    assert checksum(data) == 0, "ICMP checksum of the reassembled reply"
    assert data[0] == 0 and data[4:8] == struct.pack("!HH", 0x4242, 7)
    assert data[8:] == bytes(i % 256 for i in range(4000))
    assert run.stats["events"]["icmp_echo_replied"] == 3


def test_a_first_fragment_for_a_service_without_backend_drops_its_datagram(tmp_path):
    services = [{"vip": VIP, "proto": "udp", "port": 53,
                 "backends": [{"ip": "192.168.2.20", "port": 5353, "weight": 0}]}]
    sent = fragments_of(datagram("203.0.113.60", 45000, 2000, 0xA001))
    run = lb_run(tmp_path, frontend=sent[2:] + sent[:2], services=services)
    assert run.backend_out == []
    assert run.stats["drops"]["no_backend"] == len(sent)


# (The limits and defaults are the C side's: tests/test_contract.py.)
@pytest.mark.parametrize("fragments,problem", [
    ({"datagrams": 0}, "fragments.datagrams: 0 is outside 1-1048576"),
    ({"held": 40000}, "fragments.held: 40000 is outside 0-32768"),
    ({"timeout": 61}, "fragments.timeout: 61 is outside 1-60"),
    ({"timeout": "5s"}, "fragments.timeout: must be an integer"),
    ({"hold": 5}, "fragments.hold: unknown key (allowed: datagrams, held, timeout); "
                  "did you mean 'held'?"),
    ([1, 2], "fragments: must be a mapping"),
])
def test_fragment_settings_are_validated(fragments, problem):
    with pytest.raises(rplb_config.ConfigError) as err:
        rplb_config.parse_config({"fragments": fragments, "services": []}, source="t.yaml")
    assert problem in str(err.value)


def test_fragment_settings_round_trip_and_default():
    config = rplb_config.parse_config({"fragments": {"held": 0, "timeout": 30}})
    assert config.fragments == rplb_config.Fragments(datagrams=4096, held=0, timeout=30)
    assert rplb_config.parse_config(yaml.safe_load(rplb_config.dump_config(config))) == config
    assert rplb_config.parse_config({}).fragments == rplb_config.Fragments()


def test_the_pool_must_cover_the_held_fragments(tmp_path):
    """rplb-dpdk refuses a pool that cannot hold the fragments its services
    file lets it hold, and says which setting to change."""
    path = tmp_path / "services.yaml"
    path.write_text(yaml.safe_dump({"fragments": {"held": 4000}, "services": [DNS]}))
    need = sizing.mbufs_needed(2048, ports=2, queues_per_port=1, workers=1,
                               rx_descriptors=256, tx_descriptors=256, burst=64)
    run = run_rplb(tmp_path, [], [], rplb_args=["--config", str(path), "--mbufs",
                                                str(need.total + 100), "--descriptors", "256"])
    assert run.rc != 0
    assert "4000 fragments held" in run.stderr and "fragments.held" in run.stderr


@pytest.mark.parametrize("datagrams,seed", [(16, 1), (64, 5), (1, 9)])
def test_the_fragment_state_against_a_model(c_check, datagrams, seed):
    """tests/c/check_fragment_table.c under ASan, UBSan and RTE_ASSERT: what
    each fragment adds to its datagram (duplicate, overlap, too many holes,
    complete) against a byte map, and the table's datagrams, held
    fragments (real mbufs, in arrival order), evictions, timeouts and flush
    against a model, after every step."""
    checker = c_check("rplb-check-fragment-table")
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
           "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
    proc = subprocess.run([str(checker), "--datagrams", str(datagrams), "--seed", str(seed),
                           "--steps", "100000"], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for outcome in ("new", "duplicate", "overlap", "scattered", "refused", "expired"):
        assert result[outcome] > 0, outcome
    if datagrams < 64:                   # fewer records than keys: the oldest makes room
        assert result["evicted"] > 0
