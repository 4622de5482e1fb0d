"""ICMP errors about load-balanced packets, both ways, through net_pcap.

Each error quotes a packet as rplb forwarded it; after rplb the quote must
be that packet as its sender sent it, byte for byte: so the test builds
both with scapy (which computes every checksum afresh) and compares, which
checks the quoted IPv4 and L4 checksums independently.  The ICMP and outer
IPv4 checksums are recomputed too."""

import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw
from scapy.utils import checksum

from lbcheck import expected_backend
from test_fragments import CLIENT_MAC, LB_MAC, MAGLEV_SIZE, SERVER_MAC, VIP, lb_run

ROUTER = "198.51.100.1"            # a router between the clients and rplb
BACKEND_ROUTER = "192.168.1.1"     # a router between rplb and the backends
CLIENT = "203.0.113.5"
WEB = {"name": "web", "vip": VIP, "proto": "tcp", "port": 80, "backends": [
    {"ip": "192.168.1.10", "port": 8080, "weight": 3}, {"ip": "192.168.1.11", "port": 8080}]}
DNS = {"name": "dns", "vip": VIP, "proto": "udp", "port": 53, "backends": [
    {"ip": "192.168.2.20", "port": 5353}, {"ip": "192.168.2.21", "port": 5353}]}
SERVICES = [WEB, DNS]
KINDS = [(3, code) for code in range(16)] + [(11, 0), (11, 1), (12, 0), (12, 1), (12, 2)]
IP_AT = 14


def segment(proto, src, sport, dst, dport, ip_id=0x5151):
    """A packet with 100 bytes of payload, every checksum computed by scapy."""
    l4 = TCP(sport=sport, dport=dport, flags="PA", seq=123456, ack=654321) if proto == "tcp" \
        else UDP(sport=sport, dport=dport)
    return IP(bytes(IP(src=src, dst=dst, id=ip_id, ttl=63) / l4 / Raw(bytes(range(100)))))


def icmp_error(src, dst, kind, quote: bytes, mac=CLIENT_MAC):
    icmp_type, code = kind
    icmp = ICMP(type=icmp_type, code=code)
    if kind == (3, 4):
        icmp.nexthopmtu = 1280
    if icmp_type == 12:
        icmp.ptr = 9
    return Ether(src=mac, dst=LB_MAC) / IP(src=src, dst=dst, ttl=250, id=0x7777) / icmp \
        / Raw(quote)


def quote_length(packet: IP, l4_bytes):
    return 20 + (len(packet) - 20 if l4_bytes == "full" else l4_bytes)


def check_error(frame: bytes, sent: Ether, outer_src, outer_dst, quote: bytes):
    """Everything of the error that left is what was sent, but the outer
    addresses (outer_src, outer_dst) and the quote (quote); the outer IPv4
    and the ICMP checksums are right."""
    out, original = Ether(frame), Ether(bytes(sent))
    assert frame[:12] == bytes(sent)[:12]                        # MACs
    assert (out[IP].src, out[IP].dst) == (outer_src, outer_dst)
    for name in ("tos", "len", "id", "flags", "frag", "ttl", "proto"):
        assert getattr(out[IP], name) == getattr(original[IP], name), name
    assert checksum(frame[IP_AT:IP_AT + 20]) == 0, "outer IPv4 checksum"
    icmp = frame[IP_AT + 20:]
    assert checksum(icmp) == 0, "ICMP checksum"
    assert icmp[:2] == bytes(sent)[IP_AT + 20:IP_AT + 22]        # type, code
    assert icmp[4:8] == bytes(sent)[IP_AT + 24:IP_AT + 28]       # MTU, pointer
    assert icmp[8:] == quote


def filler(n):
    """Frames rplb passes through, to push what follows into a later rx
    burst (net_pcap reads 64 frames a burst)."""
    return [Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=f"10.9.1.{i}")
            for i in range(n)]


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_errors_about_a_flow_go_to_its_backend(tmp_path, proto):
    """Every kind (unreachable, all codes; time exceeded; parameter
    problem), with quotes of the first 8 bytes, 28 bytes and the whole
    packet, addressed to the VIP by a router between the clients and rplb:
    each goes to the flow's backend, with the outer destination and the
    quote's source rewritten; the quote is then exactly the packet the
    backend sent, checksums included."""
    service = WEB if proto == "tcp" else DNS
    backend_ip, backend_port = expected_backend(service, CLIENT, 40000, MAGLEV_SIZE)
    opener = Ether(src=CLIENT_MAC, dst=LB_MAC) / segment(proto, CLIENT, 40000, VIP,
                                                         service["port"])
    from_backend = segment(proto, backend_ip, backend_port, CLIENT, 40000)
    as_sent = segment(proto, VIP, service["port"], CLIENT, 40000)
    errors, wanted = [], []
    for kind in KINDS:
        for l4_bytes in (8, 28, "full"):
            n = quote_length(as_sent, l4_bytes)
            errors.append(icmp_error(ROUTER, VIP, kind, bytes(as_sent)[:n]))
            wanted.append(bytes(from_backend)[:n])
    run = lb_run(tmp_path, frontend=[opener] + filler(63) + errors, services=SERVICES)
    out = [f for f in run.backend_out if ICMP in Ether(f)]
    assert len(out) == len(errors)
    for frame, sent, quote in zip(out, errors, wanted):
        check_error(frame, sent, ROUTER, backend_ip, quote)
    assert run.stats["events"]["icmp_errors_to_backend"] == len(errors)
    assert run.stats["events"]["flows_created"] == 1


@pytest.mark.parametrize("l4_bytes", [8, 16, 17, 18, 20, 28])
def test_a_quoted_tcp_checksum_is_kept_right_when_the_quote_holds_it(tmp_path, l4_bytes):
    """The TCP checksum lies at bytes 16-17 of its header: a quote that
    holds both bytes (18 or more) gets it rewritten, exactly the backend's;
    a shorter one leaves what it holds of it alone (the ICMP checksum still
    covers the message as it leaves)."""
    backend_ip, backend_port = expected_backend(WEB, CLIENT, 40100, MAGLEV_SIZE)
    from_backend = segment("tcp", backend_ip, backend_port, CLIENT, 40100)
    as_sent = segment("tcp", VIP, 80, CLIENT, 40100)
    n = 20 + l4_bytes
    error = icmp_error(ROUTER, VIP, (3, 4), bytes(as_sent)[:n])
    run = lb_run(tmp_path, frontend=[error], services=SERVICES)
    quote = bytes(from_backend)[:n]
    if l4_bytes == 17:       # half the checksum: the byte quoted stays as it was
        quote = quote[:-1] + bytes(as_sent)[n - 1:n]
    check_error(run.backend_out[0], error, ROUTER, backend_ip, quote)


def test_errors_without_a_flow_go_to_the_maglev_choice(tmp_path):
    """No flow: the service's Maglev choice for the quoted client tuple
    (what a new flow would get, and what an ECMP peer would choose); no
    flow is created."""
    errors, wanted = [], []
    for i in range(40):
        client_port = 41000 + i
        backend_ip, backend_port = expected_backend(WEB, CLIENT, client_port, MAGLEV_SIZE)
        as_sent = segment("tcp", VIP, 80, CLIENT, client_port)
        errors.append(icmp_error(ROUTER, VIP, (3, 4), bytes(as_sent)[:48]))
        wanted.append((backend_ip,
                       bytes(segment("tcp", backend_ip, backend_port, CLIENT, client_port))[:48]))
    run = lb_run(tmp_path, frontend=errors, services=SERVICES)
    assert len(run.backend_out) == len(errors)
    assert len({b for b, _ in wanted}) == 2          # both backends chosen
    for frame, sent, (backend_ip, quote) in zip(run.backend_out, errors, wanted):
        check_error(frame, sent, ROUTER, backend_ip, quote)
    events = run.stats["events"]
    assert events["icmp_errors_to_backend_stateless"] == len(errors)
    assert events["flows_created"] == 0


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_errors_about_a_clients_packet_come_back_from_the_vip(tmp_path, proto):
    """From the backend side: a router between rplb and the backends quotes
    the client's packet as rplb sent it (to the backend); the quote leaves
    as the client sent it (to vip:port).  Every kind, three quote lengths.
    The outer source stays the router's."""
    service = WEB if proto == "tcp" else DNS
    backend_ip, backend_port = expected_backend(service, CLIENT, 40200, MAGLEV_SIZE)
    from_client = segment(proto, CLIENT, 40200, VIP, service["port"])
    to_backend = segment(proto, CLIENT, 40200, backend_ip, backend_port)
    errors, wanted = [], []
    for kind in KINDS:
        for l4_bytes in (8, 28, "full"):
            n = quote_length(to_backend, l4_bytes)
            errors.append(icmp_error(BACKEND_ROUTER, CLIENT, kind, bytes(to_backend)[:n],
                                     mac=SERVER_MAC))
            wanted.append(bytes(from_client)[:n])
    run = lb_run(tmp_path, frontend=[Ether(src=CLIENT_MAC, dst=LB_MAC) / from_client],
                 backend=errors, services=SERVICES)
    assert len(run.frontend_out) == len(errors)
    for frame, sent, quote in zip(run.frontend_out, errors, wanted):
        check_error(frame, sent, BACKEND_ROUTER, CLIENT, quote)
    assert run.stats["events"]["icmp_errors_to_client"] == len(errors)


def test_a_backends_own_error_comes_from_the_vip(tmp_path):
    """A backend's kernel answers a UDP datagram to a closed port with
    "port unreachable" from its own address: it leaves from the VIP, as
    IPVS does, so the client's stack matches it to its socket."""
    backend_ip, backend_port = expected_backend(DNS, CLIENT, 40300, MAGLEV_SIZE)
    from_client = segment("udp", CLIENT, 40300, VIP, 53)
    to_backend = segment("udp", CLIENT, 40300, backend_ip, backend_port)
    error = icmp_error(backend_ip, CLIENT, (3, 3), bytes(to_backend)[:48], mac=SERVER_MAC)
    run = lb_run(tmp_path, frontend=[Ether(src=CLIENT_MAC, dst=LB_MAC) / from_client],
                 backend=[error], services=SERVICES)
    check_error(run.frontend_out[0], error, VIP, CLIENT, bytes(from_client)[:48])


def test_backend_side_errors_without_a_flow(tmp_path):
    """No flow: a backend of exactly one service is translated statelessly
    (like its replies); a backend shared by two services, or an address of
    no backend, leaves unchanged."""
    shared = {"ip": "192.168.9.9", "port": 8000}
    services = SERVICES + [
        {"vip": "10.0.0.101", "proto": "tcp", "port": 80, "backends": [shared]},
        {"vip": "10.0.0.102", "proto": "tcp", "port": 80, "backends": [shared]}]
    owned = segment("tcp", CLIENT, 40400, "192.168.1.11", 8080)
    stateless = icmp_error(BACKEND_ROUTER, CLIENT, (11, 0), bytes(owned)[:48], mac=SERVER_MAC)
    unmatched = [icmp_error(BACKEND_ROUTER, CLIENT, (3, 4),
                            bytes(segment("tcp", CLIENT, 40401, ip, port))[:48], mac=SERVER_MAC)
                 for ip, port in (("192.168.9.9", 8000), ("192.168.7.7", 8080))]
    run = lb_run(tmp_path, backend=[stateless] + unmatched, services=services)
    check_error(run.frontend_out[0], stateless, BACKEND_ROUTER, CLIENT,
                bytes(segment("tcp", CLIENT, 40400, VIP, 80))[:48])
    assert run.frontend_out[1:] == [bytes(f) for f in unmatched]
    events = run.stats["events"]
    assert events["icmp_errors_to_client_stateless"] == 1
    assert events["icmp_errors_unmatched"] == 2


def test_errors_to_a_vip_that_match_nothing_or_are_broken(tmp_path):
    """A quote for no service of the VIP, or of another protocol: forwarded
    unchanged, as before.  A quote too short, broken, or not from the VIP
    the error is sent to: dropped.  A service without a usable backend
    (and no flow): dropped.  Each counted on its own."""
    services = SERVICES + [{"vip": "10.0.0.103", "proto": "udp", "port": 53,
                            "backends": [{"ip": "192.168.2.30", "port": 53, "weight": 0}]}]
    other_port = icmp_error(ROUTER, VIP, (3, 1), bytes(segment("tcp", VIP, 22, CLIENT, 1))[:28])
    other_proto = icmp_error(ROUTER, VIP, (3, 1),
                             bytes(IP(src=VIP, dst=CLIENT) / ICMP(type=0) / Raw(b"x" * 8)))
    as_sent = bytes(segment("udp", VIP, 53, CLIENT, 40500))
    short = icmp_error(ROUTER, VIP, (3, 4), as_sent[:27])
    foreign = icmp_error(ROUTER, VIP, (3, 4), bytes(segment("udp", "10.0.0.104", 53, CLIENT,
                                                           40500))[:28])
    no_backend = icmp_error(ROUTER, "10.0.0.103", (3, 4),
                            bytes(segment("udp", "10.0.0.103", 53, CLIENT, 40500))[:28])
    run = lb_run(tmp_path, frontend=[other_port, other_proto, short, foreign, no_backend],
                 services=services)
    assert run.backend_out == [bytes(other_port), bytes(other_proto)]
    assert run.stats["events"]["icmp_errors_unmatched"] == 2
    assert run.stats["drops"]["icmp_error_malformed"] == 2
    assert run.stats["drops"]["icmp_error_no_backend"] == 1


def test_a_udp_quote_without_checksum_keeps_none(tmp_path):
    backend_ip, backend_port = expected_backend(DNS, CLIENT, 40600, MAGLEV_SIZE)
    as_sent = IP(bytes(IP(src=VIP, dst=CLIENT) / UDP(sport=53, dport=40600, chksum=0)
                       / Raw(b"z" * 20)))
    from_backend = IP(bytes(IP(src=backend_ip, dst=CLIENT) / UDP(sport=backend_port,
                                                                 dport=40600, chksum=0)
                            / Raw(b"z" * 20)))
    error = icmp_error(ROUTER, VIP, (3, 3), bytes(as_sent))
    run = lb_run(tmp_path, frontend=[error], services=SERVICES)
    check_error(run.backend_out[0], error, ROUTER, backend_ip, bytes(from_backend))
    assert struct.unpack("!H", run.backend_out[0][IP_AT + 28 + 26:IP_AT + 28 + 28])[0] == 0
