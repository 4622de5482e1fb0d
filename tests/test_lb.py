"""The load-balancing engine on the wire: scapy frames through net_pcap,
checked field by field, checksums recomputed independently."""

import collections
import ipaddress

import pytest
import yaml
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from harness import run_rplb
from lbcheck import assert_checksums_valid, by_flow, expected_backend

CLIENT_MAC, LB_MAC = "02:00:00:00:00:c1", "02:00:00:00:00:1b"
SERVER_MAC = "02:00:00:00:00:5e"
MAGLEV_SIZE = 251     # small prime: fast to build, still spreads weights well

SERVICES = [
    {"name": "web", "vip": "10.0.0.100", "proto": "tcp", "port": 80, "backends": [
        {"ip": "192.168.1.10", "port": 8080, "weight": 10},
        {"ip": "192.168.1.11", "port": 8080, "weight": 5},
        {"ip": "192.168.1.12", "port": 8080, "weight": 1}]},
    {"name": "dns", "vip": "10.0.0.100", "proto": "udp", "port": 80, "backends": [
        {"ip": "192.168.2.20", "port": 5353}, {"ip": "192.168.2.21", "port": 5353}]},
    {"name": "api", "vip": "10.0.0.101", "proto": "tcp", "port": 443, "backends": [
        {"ip": "192.168.3.30", "port": 8443}]},
]


def write_config(tmp_path, services=SERVICES, **top):
    path = tmp_path / "services.yaml"
    path.write_text(yaml.safe_dump({"maglev_table_size": MAGLEV_SIZE,
                                    "flow_table_size": 65536, **top, "services": services}))
    return path


def lb_run(tmp_path, frontend=(), backend=(), services=SERVICES, extra=(), **top):
    config = write_config(tmp_path, services, **top)
    run = run_rplb(tmp_path, [bytes(f) for f in frontend], [bytes(b) for b in backend],
                   rplb_args=["--config", str(config), *extra])
    assert run.rc == 0, run.stderr
    assert run.stats["mbufs_in_use_at_exit"] == 0
    return run


def client(src, sport, dst, dport, proto="tcp", payload=b"hello", flags="S"):
    l4 = TCP(sport=sport, dport=dport, flags=flags, seq=1000) if proto == "tcp" \
        else UDP(sport=sport, dport=dport)
    return Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=src, dst=dst, ttl=61, id=77) / l4 \
        / Raw(payload)


def service_named(name):
    return next(s for s in SERVICES if s["name"] == name)


@pytest.mark.parametrize("proto,service", [("tcp", "web"), ("udp", "dns")])
def test_client_to_backend_rewrites_destination_only(tmp_path, proto, service):
    svc = service_named(service)
    sent = [client("203.0.113.7", 40000 + i, svc["vip"], svc["port"], proto) for i in range(20)]
    run = lb_run(tmp_path, frontend=sent)

    assert len(run.backend_out) == len(sent) and run.frontend_out == []
    for original, frame in zip(sent, run.backend_out):
        out = Ether(frame)
        l4 = TCP if proto == "tcp" else UDP
        want_ip, want_port = expected_backend(svc, "203.0.113.7", original[l4].sport, MAGLEV_SIZE)
        assert (out[IP].dst, out[l4].dport) == (want_ip, want_port)
        # everything else untouched: MACs, source, TTL, id, ports, payload
        assert out.src == CLIENT_MAC and out.dst == LB_MAC
        assert out[IP].src == "203.0.113.7" and out[IP].ttl == 61 and out[IP].id == 77
        assert out[l4].sport == original[l4].sport
        assert bytes(out[l4].payload) == b"hello"
        assert_checksums_valid(frame)
    assert run.stats["events"]["to_backend"] == len(sent)
    assert run.stats["events"]["flows_created"] == len(sent)


@pytest.mark.parametrize("proto,service", [("tcp", "web"), ("udp", "dns")])
def test_backend_reply_rewrites_source_back_to_vip(tmp_path, proto, service):
    svc = service_named(service)
    backend = svc["backends"][0]
    l4 = TCP if proto == "tcp" else UDP
    replies = []
    for i in range(10):
        seg = TCP(sport=backend["port"], dport=41000 + i, flags="SA") if proto == "tcp" \
            else UDP(sport=backend["port"], dport=41000 + i)
        replies.append(Ether(src=SERVER_MAC, dst=LB_MAC)
                       / IP(src=backend["ip"], dst="198.51.100.9", ttl=64) / seg / Raw(b"reply"))
    run = lb_run(tmp_path, backend=replies)

    assert len(run.frontend_out) == len(replies) and run.backend_out == []
    for original, frame in zip(replies, run.frontend_out):
        out = Ether(frame)
        assert (out[IP].src, out[l4].sport) == (svc["vip"], svc["port"])
        assert (out[IP].dst, out[l4].dport) == ("198.51.100.9", original[l4].dport)
        assert out.src == SERVER_MAC and out[IP].ttl == 64
        assert bytes(out[l4].payload) == b"reply"
        assert_checksums_valid(frame)
    # no flow exists (they were never opened through rplb): stateless
    assert run.stats["events"]["to_client_stateless"] == len(replies)


def test_udp_zero_checksum_stays_zero(tmp_path):
    svc = service_named("dns")
    pkt = client("203.0.113.8", 5000, svc["vip"], svc["port"], "udp")
    pkt[UDP].chksum = 0
    frame = bytes(pkt)
    run = lb_run(tmp_path, frontend=[frame])
    out = Ether(run.backend_out[0])
    assert out[UDP].chksum == 0
    assert_checksums_valid(run.backend_out[0])


def test_ipv4_options_are_handled(tmp_path):
    svc = service_named("web")
    pkt = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src="203.0.113.9", dst=svc["vip"],
                                                 options=[b"\x01\x01\x01\x00"]) \
        / TCP(sport=1234, dport=80, flags="S") / Raw(b"opt")
    assert Ether(bytes(pkt))[IP].ihl == 6
    run = lb_run(tmp_path, frontend=[pkt])
    out = Ether(run.backend_out[0])
    assert (out[IP].dst, out[TCP].dport) == expected_backend(svc, "203.0.113.9", 1234, MAGLEV_SIZE)
    assert out[IP].ihl == 6 and bytes(out[TCP].payload) == b"opt"
    assert_checksums_valid(run.backend_out[0])


def test_same_vip_and_port_tcp_and_udp_go_to_their_own_backends(tmp_path):
    tcp_ips = {b["ip"] for b in service_named("web")["backends"]}
    udp_ips = {b["ip"] for b in service_named("dns")["backends"]}
    sent = [client("203.0.113.10", 30000 + i, "10.0.0.100", 80, proto)
            for i in range(200) for proto in ("tcp", "udp")]
    run = lb_run(tmp_path, frontend=sent)
    assert len(run.backend_out) == len(sent)
    for frame in run.backend_out:
        out = Ether(frame)
        assert out[IP].dst in (tcp_ips if TCP in out else udp_ips)
    seen_tcp = {Ether(f)[IP].dst for f in run.backend_out if TCP in Ether(f)}
    seen_udp = {Ether(f)[IP].dst for f in run.backend_out if UDP in Ether(f)}
    assert seen_tcp == tcp_ips and seen_udp == udp_ips


def test_services_with_different_backend_counts(tmp_path):
    sent = [client("203.0.113.11", 20000 + i, s["vip"], s["port"], s["proto"])
            for i in range(300) for s in SERVICES]
    run = lb_run(tmp_path, frontend=sent)
    seen = collections.defaultdict(set)
    for frame in run.backend_out:
        out = Ether(frame)
        l4 = out[TCP] if TCP in out else out[UDP]
        seen[(out[IP].dst, l4.dport)].add(1)
    for svc in SERVICES:
        for b in svc["backends"]:
            assert (b["ip"], b["port"]) in seen, (svc["name"], b)
    names = {s["service"]: s for s in run.stats["services"]}
    for svc in SERVICES:
        assert names[svc["name"]]["new_flows"] == 300
        assert len(names[svc["name"]]["backends"]) == len(svc["backends"])


def test_weight_shares_over_10000_flows(tmp_path):
    svc = service_named("web")
    sent = [client(str(ipaddress.IPv4Address("100.64.0.0") + i), 1024 + i % 50000,
                   svc["vip"], 80, payload=b"") for i in range(10000)]
    run = lb_run(tmp_path, frontend=sent, maglev_table_size=65537)
    counts = collections.Counter(Ether(f)[IP].dst for f in run.backend_out)
    assert sum(counts.values()) == 10000
    total_weight = sum(b["weight"] for b in svc["backends"])
    for b in svc["backends"]:
        share = counts[b["ip"]] / 10000
        want = b["weight"] / total_weight
        assert abs(share - want) <= 0.05 * want + 0.005, (b, share, want)
    # weight 10 gets on average twice the sessions of weight 5
    assert 1.8 <= counts["192.168.1.10"] / counts["192.168.1.11"] <= 2.2


def test_every_packet_of_a_flow_goes_to_one_backend(tmp_path):
    svc = service_named("web")
    flows = [("203.0.113.%d" % (i % 200 + 1), 50000 + i) for i in range(100)]
    sent = []
    for rnd in range(5):                       # interleaved: flows are mixed in bursts
        for ip, port in flows:
            sent.append(client(ip, port, svc["vip"], 80, flags="S" if rnd == 0 else "A"))
    run = lb_run(tmp_path, frontend=sent)
    seen = by_flow(run.backend_out)
    assert len(seen) == len(flows)
    for flow, backends in seen.items():
        assert len(backends) == 1, (flow, backends)
    assert run.stats["events"]["flows_created"] == len(flows)
    web = next(s for s in run.stats["services"] if s["service"] == "web")
    assert web["active_flows"] == len(flows) and web["packets"] == len(sent)


def test_round_trip_uses_the_flow(tmp_path):
    """Client SYN creates the flow; the backend's reply is rewritten by it.
    The backend serves two services, so the stateless path cannot answer
    for it (without a flow its reply leaves unchanged, reply_unmatched):
    only the flow knows which VIP and port the client used."""
    shared = {"ip": "192.168.9.9", "port": 8000}
    services = [
        {"name": "a", "vip": "10.0.0.100", "proto": "tcp", "port": 80, "backends": [shared]},
        {"name": "b", "vip": "10.0.0.101", "proto": "tcp", "port": 81, "backends": [shared]},
    ]
    syn = client("203.0.113.20", 44444, "10.0.0.101", 81)
    synack = Ether(src=SERVER_MAC, dst=LB_MAC) \
        / IP(src="192.168.9.9", dst="203.0.113.20", ttl=63, id=99) \
        / TCP(sport=8000, dport=44444, flags="SA", seq=5000, ack=1001) / Raw(b"x")
    # Replies arrive on the other port in the same run; the frontend frame is
    # processed first because rx polls port 0 before port 1.
    run = lb_run(tmp_path, frontend=[syn], backend=[synack], services=services)
    assert len(run.backend_out) == 1
    to_backend = Ether(run.backend_out[0])
    assert (to_backend[IP].dst, to_backend[TCP].dport) == ("192.168.9.9", 8000)
    assert len(run.frontend_out) == 1
    out = Ether(run.frontend_out[0])
    assert (out.src, out.dst) == (SERVER_MAC, LB_MAC)            # no MAC rewriting
    assert (out[IP].src, out[TCP].sport) == ("10.0.0.101", 81)    # service b's, not a's
    assert (out[IP].dst, out[TCP].dport) == ("203.0.113.20", 44444)
    assert (out[IP].ttl, out[IP].id, out[TCP].flags) == (63, 99, "SA")
    assert (out[TCP].seq, out[TCP].ack, bytes(out[TCP].payload)) == (5000, 1001, b"x")
    assert_checksums_valid(run.frontend_out[0])
    events = run.stats["events"]
    assert events["flows_created"] == 1
    assert events["to_client_by_flow"] == 1
    assert events["to_client_stateless"] == 0 and events["reply_unmatched"] == 0


def test_backend_shared_by_two_services_needs_the_flow(tmp_path):
    shared = {"ip": "192.168.9.9", "port": 8000}
    services = [
        {"vip": "10.0.0.100", "proto": "tcp", "port": 80, "backends": [shared]},
        {"vip": "10.0.0.101", "proto": "tcp", "port": 81, "backends": [shared]},
    ]
    reply = Ether() / IP(src="192.168.9.9", dst="198.51.100.1") / TCP(sport=8000, dport=5555)
    run = lb_run(tmp_path, backend=[reply], services=services)
    assert run.frontend_out == [bytes(reply)]          # ambiguous without a flow: unchanged
    assert run.stats["events"]["reply_unmatched"] == 1


def test_icmp_echo_to_a_vip_is_answered(tmp_path):
    requests = [Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src="203.0.113.30", dst=vip, ttl=50)
                / ICMP(type=8, id=0x1234, seq=seq) / Raw(b"ping-payload-%d" % seq)
                for seq, vip in enumerate(["10.0.0.100", "10.0.0.101", "10.0.0.100"])]
    run = lb_run(tmp_path, frontend=requests)
    assert run.backend_out == []
    assert len(run.frontend_out) == 3
    for req, frame in zip(requests, run.frontend_out):
        out = Ether(frame)
        assert out.src == LB_MAC and out.dst == CLIENT_MAC
        assert out[IP].src == req[IP].dst and out[IP].dst == "203.0.113.30"
        assert out[ICMP].type == 0 and out[ICMP].code == 0
        assert out[ICMP].id == 0x1234 and out[ICMP].seq == req[ICMP].seq
        assert bytes(out[ICMP].payload) == bytes(req[ICMP].payload)
        assert_checksums_valid(frame)
    assert run.stats["events"]["icmp_echo_replied"] == 3


def test_other_traffic_passes_byte_identical(tmp_path):
    eth = Ether(src=CLIENT_MAC, dst=LB_MAC)
    frontend = [
        eth / ARP(op=1, psrc="203.0.113.1", pdst="10.0.0.100"),
        eth / IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(dport=80),
        eth / Dot1Q(vlan=7) / IP(src="203.0.113.1", dst="10.0.0.100") / TCP(dport=80),
        eth / IP(src="203.0.113.1", dst="10.9.9.9") / TCP(dport=80),           # not a VIP
        eth / IP(src="203.0.113.1", dst="10.0.0.100") / TCP(dport=22),         # VIP, no service
        eth / IP(src="203.0.113.1", dst="10.0.0.101") / UDP(dport=443),        # wrong proto
        eth / IP(src="203.0.113.1", dst="10.0.0.100", proto=47) / Raw(b"gre"), # other protocol
        eth / IP(src="203.0.113.1", dst="10.0.0.100") / ICMP(type=13),         # not an echo
    ]
    backend = [
        Ether() / IP(src="192.168.1.10", dst="203.0.113.1") / TCP(sport=9999),  # not a backend port
        Ether() / ARP(op=2, psrc="192.168.1.10"),
    ]
    run = lb_run(tmp_path, frontend=frontend, backend=backend)
    # Byte-identical, each exactly once.  Within a burst, TCP/UDP frames
    # leave after the flow lookup and others at once, so the order between
    # different flows may change (not within one flow).
    assert sorted(run.backend_out) == sorted(bytes(f) for f in frontend)
    assert sorted(run.frontend_out) == sorted(bytes(b) for b in backend)
    assert run.stats["events"]["passed_through"] == len(frontend) + len(backend)


def test_pass_through_keeps_the_order_of_each_flow(tmp_path):
    # Frames of one non-service TCP flow, of one UDP flow and of ARP,
    # interleaved in one burst: each flow leaves in its own order.
    eth = Ether(src=CLIENT_MAC, dst=LB_MAC)
    tcp = [eth / IP(src="203.0.113.1", dst="10.9.9.9") / TCP(sport=1000, dport=80, seq=i)
           for i in range(8)]
    udp = [eth / IP(src="203.0.113.2", dst="10.0.0.100") / UDP(sport=7, dport=9) / Raw(b"%d" % i)
           for i in range(8)]
    arp = [eth / ARP(op=1, psrc="203.0.113.3", pdst="10.0.0.%d" % i) for i in range(8)]
    frontend = [f for triple in zip(tcp, udp, arp) for f in triple]
    run = lb_run(tmp_path, frontend=frontend)
    for flow in (tcp, udp, arp):
        wanted = [bytes(f) for f in flow]
        assert [b for b in run.backend_out if b in wanted] == wanted
    assert len(run.backend_out) == len(frontend)


def _to_vip(**ip_fields):
    return Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src="203.0.113.40", dst="10.0.0.100",
                                                  **ip_fields)


def test_malformed_packets_to_a_service_are_dropped_and_counted(tmp_path):
    """(Fragments to a service are translated: tests/test_fragments.py.)"""
    good = bytes(_to_vip() / TCP(sport=1, dport=80) / Raw(b"x" * 20))
    ihl_small = bytearray(good)
    ihl_small[14] = 0x44                                  # IHL 4 (< 5)
    total_too_long = bytearray(good)
    total_too_long[16:18] = (2000).to_bytes(2, "big")     # beyond the frame
    truncated_tcp = bytes(_to_vip() / Raw(b"\x00" * 4))[:34 + 4]
    truncated_tcp = bytearray(truncated_tcp)
    truncated_tcp[23] = 6                                 # says TCP, carries 4 bytes
    truncated_tcp[16:18] = (24).to_bytes(2, "big")
    malformed = [bytes(ihl_small), bytes(total_too_long), bytes(truncated_tcp)]
    run = lb_run(tmp_path, frontend=malformed)
    assert run.backend_out == [] and run.frontend_out == []
    assert run.stats["drops"]["malformed"] == len(malformed)


def test_service_without_usable_backend_drops_new_flows(tmp_path):
    services = [{"vip": "10.0.0.100", "proto": "tcp", "port": 80,
                 "backends": [{"ip": "192.168.1.10", "port": 80, "weight": 0}]},
                {"vip": "10.0.0.100", "proto": "tcp", "port": 81, "backends": []}]
    sent = [client("203.0.113.50", 1000 + i, "10.0.0.100", 80 + i % 2) for i in range(6)]
    run = lb_run(tmp_path, frontend=sent, services=services)
    assert run.backend_out == []
    assert run.stats["drops"]["no_backend"] == 6


def test_full_flow_table_still_serves_new_flows(tmp_path):
    svc = service_named("web")
    sent = [client("203.0.114.%d" % (i % 250 + 1), 2000 + i, svc["vip"], 80) for i in range(100)]
    run = lb_run(tmp_path, frontend=sent, flow_table_size=16)
    assert len(run.backend_out) == 100
    for original, frame in zip(sent, run.backend_out):
        out = Ether(frame)
        assert (out[IP].dst, out[TCP].dport) == expected_backend(
            svc, original[IP].src, original[TCP].sport, MAGLEV_SIZE)
    assert run.stats["events"]["flows_created"] == 16
    assert run.stats["events"]["flow_table_full"] == 100 - 16


def test_many_bursts_return_every_mbuf(tmp_path):
    svc = service_named("web")
    sent = [client("203.0.113.60", 3000 + i % 500, svc["vip"], 80) for i in range(5000)]
    run = lb_run(tmp_path, frontend=sent)
    assert len(run.backend_out) == 5000
    assert run.stats["mbufs_in_use_at_exit"] == 0


def test_idle_flows_expire_by_their_state_timeout(tmp_path):
    """Aging runs inside the worker loop: SYN-only, closing and UDP flows use
    their short timeouts (1 s here), established ones the long one."""
    web, dns = service_named("web"), service_named("dns")
    established = [client("203.0.113.70", 7000 + i, web["vip"], 80, flags="A") for i in range(10)]
    syn_only = [client("203.0.113.71", 7100 + i, web["vip"], 80, flags="S") for i in range(10)]
    closing = [client("203.0.113.72", 7200 + i, web["vip"], 80, flags="FA") for i in range(10)]
    udp = [client("203.0.113.73", 7300 + i, dns["vip"], dns["port"], "udp") for i in range(10)]
    config = write_config(tmp_path, timeouts={"tcp": 300, "tcp_syn": 1, "tcp_fin": 1, "udp": 1})
    run = run_rplb(tmp_path, [bytes(p) for p in established + syn_only + closing + udp], [],
                   rplb_args=["--config", str(config)], duration=3.5)
    assert run.rc == 0, run.stderr
    assert run.stats["events"]["flows_created"] == 40
    assert run.stats["events"]["flows_expired"] == 30
    active = {s["service"]: s["active_flows"] for s in run.stats["services"]}
    assert active == {"web": 10, "dns": 0, "api": 0}


def test_tcp_state_follows_the_flags_of_each_flow(tmp_path):
    """The state decides the timeout (1 s for SYN and closing flows here), so
    what expires shows each flow's state: SYN then ACK is established; SYN
    then a retransmitted SYN, or a segment without flags (TCP discards it),
    stays opening; FIN or RST after ACK is closing."""
    web = service_named("web")

    def flow(port, *flags):
        return [client("203.0.113.75", port, web["vip"], 80, flags=f) for f in flags]

    established = flow(7500, "S", "A") + flow(7501, "S", "PA")
    opening = flow(7510, "S", "S") + flow(7511, "S", "")
    closing = flow(7520, "A", "FA") + flow(7521, "S", "A", "R")
    config = write_config(tmp_path, timeouts={"tcp": 300, "tcp_syn": 1, "tcp_fin": 1, "udp": 1})
    run = run_rplb(tmp_path, [bytes(p) for p in established + opening + closing], [],
                   rplb_args=["--config", str(config)], duration=3.5)
    assert run.rc == 0, run.stderr
    assert run.stats["events"]["flows_created"] == 6
    assert run.stats["events"]["flows_expired"] == 4
    active = {s["service"]: s["active_flows"] for s in run.stats["services"]}
    assert active["web"] == 2


def test_flows_do_not_expire_before_their_timeout(tmp_path):
    web = service_named("web")
    run = lb_run(tmp_path, frontend=[client("203.0.113.74", 7400 + i, web["vip"], 80)
                                     for i in range(10)])
    assert run.stats["events"]["flows_expired"] == 0
    assert next(s for s in run.stats["services"] if s["service"] == "web")["active_flows"] == 10


@pytest.mark.parametrize("strict", [False, True])
def test_strict_mode_keeps_the_backend_network_unreachable(tmp_path, strict):
    probes = [client("203.0.113.80", 9000, "192.168.1.10", 8080),       # a backend ip:port
              client("203.0.113.80", 9001, "192.168.1.11", 22),         # a backend ip, other port
              client("203.0.113.80", 9002, "192.168.7.7", 80)]          # not a backend
    run = lb_run(tmp_path, frontend=probes, strict=strict)
    if strict:
        assert run.backend_out == [bytes(probes[2])]
        assert run.stats["drops"]["strict"] == 2
    else:
        assert run.backend_out == [bytes(p) for p in probes]
        assert run.stats["drops"]["strict"] == 0


def test_bad_checksum_stays_bad_through_a_software_rewrite(tmp_path):
    """Without RX checksum offload rplb does not verify checksums (that would
    cost a pass over every payload); the incremental update keeps a wrong
    checksum wrong, so the backend's stack still rejects the frame."""
    svc = service_named("web")
    pkt = Ether(bytes(client("203.0.113.90", 6100, svc["vip"], 80)))
    good = pkt[TCP].chksum
    pkt[TCP].chksum = bad = good ^ 0x00FF
    run = lb_run(tmp_path, frontend=[pkt])
    out = Ether(run.backend_out[0])
    fresh = out.copy()
    fresh[TCP].chksum = None
    correct = Ether(bytes(fresh))[TCP].chksum
    assert out[TCP].chksum != correct                                # still wrong ...
    # ... by exactly the same one's-complement error as on arrival
    assert (correct - out[TCP].chksum) % 0xFFFF == (good - bad) % 0xFFFF
    assert run.stats["drops"]["bad_checksum"] == 0


def test_a_new_flow_takes_over_the_backend_tuple_of_an_older_one(tmp_path):
    """Two flows, one backend-side tuple: a client reuses its source port for
    a second VIP served by the same backend while the first connection's
    flow is still stored (closing flows stay 10 s).  The backend can hold
    one connection on client ip:port <-> backend ip:port: the new flow
    takes that tuple over, so the backend's SYN-ACK leaves from the VIP the
    client is calling now; the older flow ends, counted flows_superseded.
    (Before, the SYN-ACK left from the old VIP and the client reset the
    connection: 8-15 of 400 curls alternating between two such VIPs
    failed.)"""
    shared = {"ip": "192.168.9.9", "port": 8000}
    services = [
        {"name": "a", "vip": "10.0.0.100", "proto": "tcp", "port": 80, "backends": [shared]},
        {"name": "b", "vip": "10.0.0.101", "proto": "tcp", "port": 81, "backends": [shared]},
    ]
    client_ip, port = "203.0.113.21", 45555
    frontend = [client(client_ip, port, "10.0.0.100", 80, flags="S"),
                client(client_ip, port, "10.0.0.100", 80, flags="A"),
                client(client_ip, port, "10.0.0.100", 80, flags="FA"),     # closing
                client(client_ip, port, "10.0.0.101", 81, flags="S")]      # port reused
    synack = Ether(src=SERVER_MAC, dst=LB_MAC) / IP(src="192.168.9.9", dst=client_ip) \
        / TCP(sport=8000, dport=port, flags="SA", seq=7000, ack=1001)
    # The frontend's four frames are one rx burst, read before the backend's.
    run = lb_run(tmp_path, frontend=frontend, backend=[synack], services=services)
    assert [(Ether(f)[IP].dst, Ether(f)[TCP].dport) for f in run.backend_out] == \
        [("192.168.9.9", 8000)] * 4
    assert len(run.frontend_out) == 1
    out = Ether(run.frontend_out[0])
    assert (out[IP].src, out[TCP].sport) == ("10.0.0.101", 81)      # b's, the new flow
    assert (out[IP].dst, out[TCP].dport) == (client_ip, port)
    assert_checksums_valid(run.frontend_out[0])
    events = run.stats["events"]
    assert events["flows_created"] == 2 and events["flows_superseded"] == 1
    assert events["to_client_by_flow"] == 1
    active = {s["service"]: s["active_flows"] for s in run.stats["services"]}
    assert active == {"a": 0, "b": 1}
