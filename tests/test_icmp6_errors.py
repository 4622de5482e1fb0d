"""ICMPv6 errors about IPv6 flows, translated both ways (issue 19, as
issue 17 did for ICMPv4): packet too big first, then destination
unreachable, time exceeded, parameter problem.  Every field checked, the
ICMPv6 and quoted checksums recomputed by scapy."""

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (ICMPv6DestUnreach, ICMPv6PacketTooBig, ICMPv6ParamProblem,
                                ICMPv6TimeExceeded, IPerror6, IPv6, TCPerror, UDPerror)
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from lbcheck import expected_backend6, steering_owner6
from test_ipv6 import (CLIENT_MAC, DNS6, LB_MAC, MAGLEV_SIZE, SERVER_MAC, VIP, WEB6, client6,
                       drops, events, run_v6)

ROUTER = "2001:db8:ffff::1"
ERRORS = {
    "packet_too_big": lambda: ICMPv6PacketTooBig(mtu=1280),
    "dest_unreach": lambda: ICMPv6DestUnreach(code=4),
    "time_exceeded": lambda: ICMPv6TimeExceeded(code=0),
    "param_problem": lambda: ICMPv6ParamProblem(code=0, ptr=40),
}


def ones_complement(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp6_checksum_ok(frame: bytes) -> None:
    """The ICMPv6 checksum over the pseudo-header and the message as it
    lies in the frame (no re-dissection: quotes may be cut anywhere)."""
    ip = frame[14:54]
    message = frame[54:54 + int.from_bytes(ip[4:6], "big")]
    assert ip[6] == 58
    zeroed = message[:2] + b"\0\0" + message[4:]
    pseudo = ip[8:40] + len(message).to_bytes(4, "big") + b"\0\0\0" + bytes([58])
    want = ones_complement(pseudo + zeroed)
    stored = int.from_bytes(message[2:4], "big")
    assert stored == want, f"ICMPv6 checksum {stored:#x} != {want:#x}"


def quoted_l4_checksum_ok(frame: bytes, full: bool) -> None:
    """A whole quoted segment's checksum is right after the rewrite (its
    pseudo-header names the rewritten addresses)."""
    # From the frame's bytes: scapy splits the quote of some types at 128
    # bytes (RFC 4884's length field) when it dissects them.
    inner = IPv6(frame[14 + 40 + 8:])
    l4 = inner[TCP] if TCP in inner else inner[UDP]
    stored = l4.chksum
    l4.chksum = None
    want = IPv6(bytes(inner))[type(l4)].chksum
    assert stored == want, f"quoted checksum {stored:#x} != {want:#x}"


def error_to_vip(kind, client, cport, proto="tcp", length=None, quote_src=VIP, vport=80):
    """An error a router sends to the VIP about a reply vip:vport -> client."""
    l4 = TCP(sport=vport, dport=cport, flags="A", seq=77) if proto == "tcp" \
        else UDP(sport=vport, dport=cport)
    quote = bytes(IPv6(src=quote_src, dst=client, hlim=60) / l4 / Raw(b"r" * 600))
    if length is not None:
        quote = quote[:length]
    return Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src=ROUTER, dst=VIP, hlim=64) / \
        ERRORS[kind]() / Raw(quote)


def error_from_backend_side(kind, source, client, cport, backend, bport, proto="tcp"):
    """An error about a client's packet client -> backend, sent to the client."""
    l4 = TCP(sport=cport, dport=bport, flags="A", seq=99) if proto == "tcp" \
        else UDP(sport=cport, dport=bport)
    quote = bytes(IPv6(src=client, dst=backend, hlim=60) / l4 / Raw(b"u" * 100))
    return Ether(src=SERVER_MAC, dst=LB_MAC) / IPv6(src=source, dst=client, hlim=64) / \
        ERRORS[kind]() / Raw(quote)


@pytest.mark.parametrize("kind", list(ERRORS))
def test_errors_about_a_reply_reach_the_flows_backend(tmp_path, kind):
    client, cport = "2001:db8::5", 40000
    bip, bport = expected_backend6(WEB6, client, cport, MAGLEV_SIZE)
    error = error_to_vip(kind, client, cport)
    out = run_v6(tmp_path, [{"frontend": [client6(client, cport)]}, {"frontend": [error]}])
    second = out["phases"][1]
    [sent] = second["backend_out"]
    pkt = Ether(sent)
    assert (pkt[IPv6].src, pkt[IPv6].dst, pkt[IPv6].hlim) == (ROUTER, bip, 64)
    assert type(pkt[IPv6].payload) is type(ERRORS[kind]())
    if kind == "packet_too_big":
        assert pkt[ICMPv6PacketTooBig].mtu == 1280
    quote = pkt[IPerror6]
    assert (quote.src, quote.dst) == (bip, client)
    assert (quote[TCPerror].sport, quote[TCPerror].dport) == (bport, cport)
    icmp6_checksum_ok(sent)
    quoted_l4_checksum_ok(sent, True)
    assert events(second)["icmp_errors_to_backend"] == 1


@pytest.mark.parametrize("proto,length", [("udp", 48), ("tcp", 48), ("tcp", 60), ("udp", None)])
def test_errors_without_a_flow_take_the_maglev_choice(tmp_path, proto, length):
    service = WEB6 if proto == "tcp" else DNS6
    client, cport = "2001:db8::77", 41000
    bip, bport = expected_backend6(service, client, cport, MAGLEV_SIZE)
    error = error_to_vip("packet_too_big", client, cport, proto=proto, length=length,
                         vport=service["port"])
    out = run_v6(tmp_path, [{"frontend": [error]}])
    [phase] = out["phases"]
    [sent] = phase["backend_out"]
    pkt = Ether(sent)
    assert pkt[IPv6].dst == bip
    raw = sent[14 + 40 + 8:]
    quoted = IPv6(raw[:40])
    assert quoted.src == bip and quoted.dst == client
    assert int.from_bytes(raw[40:42], "big") == bport
    icmp6_checksum_ok(sent)
    if length is None:
        quoted_l4_checksum_ok(sent, True)
    assert events(phase)["icmp_errors_to_backend_stateless"] == 1
    assert "flows_created" not in events(phase)


def test_errors_from_the_backend_side_reach_the_client_as_the_vip(tmp_path):
    client, cport = "2001:db8::5", 40000
    bip, bport = expected_backend6(WEB6, client, cport, MAGLEV_SIZE)
    router = error_from_backend_side("packet_too_big", "fd00:1::fe", client, cport, bip, bport)
    own = error_from_backend_side("dest_unreach", bip, client, cport, bip, bport)
    out = run_v6(tmp_path, [{"frontend": [client6(client, cport)]},
                            {"backend": [router, own]}])
    second = out["phases"][1]
    first_out, second_out = second["frontend_out"]
    for sent, source in ((first_out, "fd00:1::fe"), (second_out, VIP)):
        pkt = Ether(sent)
        assert (pkt[IPv6].src, pkt[IPv6].dst) == (source, client)
        quote = pkt[IPerror6]
        assert (quote.src, quote.dst) == (client, VIP)
        assert (quote[TCPerror].sport, quote[TCPerror].dport) == (cport, 80)
        icmp6_checksum_ok(sent)
        quoted_l4_checksum_ok(sent, True)
    assert events(second)["icmp_errors_to_client"] == 2


def test_stateless_error_from_the_backend_side(tmp_path):
    error = error_from_backend_side("time_exceeded", "fd00:2::fe", "2001:db8::9", 33000,
                                    "fd00:2::20", 5353, proto="udp")
    out = run_v6(tmp_path, [{"backend": [error]}])
    [phase] = out["phases"]
    [sent] = phase["frontend_out"]
    quote = Ether(sent)[IPerror6]
    assert quote.dst == VIP and quote[UDPerror].dport == 53
    icmp6_checksum_ok(sent)
    quoted_l4_checksum_ok(sent, True)
    assert events(phase)["icmp_errors_to_client_stateless"] == 1


def test_unmatched_malformed_and_forged_errors(tmp_path):
    unmatched = [
        # A quote of a port no service has, and one of another protocol.
        error_to_vip("dest_unreach", "2001:db8::5", 40000, vport=8443),
        Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src=ROUTER, dst=VIP) / ICMPv6DestUnreach() /
        Raw(bytes(IPv6(src=VIP, dst="2001:db8::5", nh=59)) + bytes(8)),
    ]
    bad = [
        # A quote shorter than an IPv6 header and 8 bytes; a quote whose
        # source is not the VIP the error is sent to (forged).
        error_to_vip("packet_too_big", "2001:db8::5", 40000, length=30),
        error_to_vip("packet_too_big", "2001:db8::5", 40000, quote_src="fd00::999"),
    ]
    backend_unmatched = [error_from_backend_side("dest_unreach", "fd00:9::1", "2001:db8::5",
                                                 40000, "fd00:9::2", 80)]
    out = run_v6(tmp_path, [{"frontend": unmatched + bad, "backend": backend_unmatched}])
    [phase] = out["phases"]
    assert phase["backend_out"] == [bytes(f) for f in unmatched]
    assert phase["frontend_out"] == [bytes(f) for f in backend_unmatched]
    assert events(phase)["icmp_errors_unmatched"] == 3
    assert drops(phase) == {"icmp_error_malformed": 2}


def test_errors_reach_the_worker_of_the_flow_they_quote(tmp_path):
    clients = [(f"2001:db8:{i:x}::7", 42000 + i) for i in range(1, 21)]
    owners = [steering_owner6(ip, 2) for ip, _ in clients]
    assert set(owners) == {0, 1}
    requests, errors = [[], []], [[], []]
    for (ip, port), owner in zip(clients, owners):
        requests[owner].append(client6(ip, port))
        # The router's address decides nothing: each error arrives on the
        # queue of the worker that does not hold its flow.
        errors[1 - owner].append(error_to_vip("packet_too_big", ip, port))
    out = run_v6(tmp_path, [{"frontend": requests}, {"frontend": errors}], workers=2)
    second = out["phases"][1]
    assert events(second)["icmp_errors_to_backend"] == len(clients)
    assert "icmp_errors_to_backend_stateless" not in events(second)
    for sent in second["backend_out"]:
        quote = Ether(sent)[IPerror6]
        client, cport = quote.dst, quote[TCPerror].dport
        assert (Ether(sent)[IPv6].dst, quote[TCPerror].sport) == \
            expected_backend6(WEB6, client, cport, MAGLEV_SIZE)
        icmp6_checksum_ok(sent)
