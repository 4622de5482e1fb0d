#!/usr/bin/env python3
"""Explain what rplb did to the example's frames: each flow with both its
directions (so both rewrites show), the pings rplb answered, what passed
through unchanged, and rplb's counters.

    .venv/bin/python examples/show.py DIR [SERVICES]

DIR holds clients.pcap, servers.pcap (what came in on ports 0 and 1),
to-servers.pcap, to-clients.pcap (what left them) and stats.json.
Checksums are recomputed here with scapy and compared with the frames'.
"""

import json
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

from scapy.layers.dns import DNS
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.utils import rdpcap

HERE = Path(__file__).resolve().parent


def network(frame):
    """The frame's IPv4 or IPv6 header, else None."""
    return frame[IP] if IP in frame else frame[IPv6] if IPv6 in frame else None


def endpoints(frame):
    """(proto, src ip, src port, dst ip, dst port) of a TCP/UDP frame over
    IPv4 or IPv6, else None."""
    ip = network(frame)
    if ip is None:
        return None
    for layer, proto in ((TCP, "TCP"), (UDP, "UDP")):
        if layer in frame:
            return (proto, ip.src, frame[layer].sport, ip.dst, frame[layer].dport)
    return None


# Each checksummed layer, and the name of its checksum field in scapy.
CHECKSUMS = ((IP, "chksum"), (TCP, "chksum"), (UDP, "chksum"), (ICMP, "chksum"),
             (ICMPv6EchoRequest, "cksum"), (ICMPv6EchoReply, "cksum"))


def checksums_ok(frame) -> bool:
    """The IPv4 header's and the TCP/UDP/ICMP/ICMPv6 checksums as scapy
    computes them afresh (IPv6 has no header checksum)."""
    fresh = frame.copy()
    for layer, field in CHECKSUMS:
        if layer in fresh:
            setattr(fresh[layer], field, None)
    fresh = fresh.__class__(bytes(fresh))
    return all(getattr(fresh[layer], field) == getattr(frame[layer], field)
               for layer, field in CHECKSUMS if layer in frame)


def what(frame) -> str:
    """The part of a frame a reader follows: TCP flags and payload, DNS."""
    if TCP in frame:
        size = len(frame[TCP].payload)
        return str(frame[TCP].flags) + (f" {size} bytes" if size else "")
    if DNS in frame:
        return "DNS answer" if frame[DNS].qr else "DNS query"
    if UDP in frame:
        return f"{len(frame[UDP].payload)} bytes"
    return ""


def paragraph(text: str) -> None:
    print("\n" + textwrap.fill(text, width=100, subsequent_indent="  "))


def address(ip, port) -> str:
    """ip:port, an IPv6 address in brackets ([fd00::100]:80), as rplb writes it."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def line(label, frame, note="") -> str:
    proto, sip, sport, dip, dport = endpoints(frame)
    check = "checksums ok" if checksums_ok(frame) else "CHECKSUM WRONG"
    text = f"    {label:<16}{address(sip, sport):>22} > {address(dip, dport):<22} {what(frame):<12}"
    return (text + (f" {note}; {check}" if note else "")).rstrip()


def show(directory: Path, services_file: Path = HERE / "services.yaml") -> None:
    directory = Path(directory)
    captures = {name: list(rdpcap(str(directory / f"{name}.pcap")))
                for name in ("clients", "servers", "to-servers", "to-clients")}
    stats = json.loads((directory / "stats.json").read_text())
    names = service_names(services_file)

    # A flow is named by its client end: (proto, client ip, client port).
    in_from_clients, out_to_servers = defaultdict(list), defaultdict(list)
    in_from_servers, out_to_clients = defaultdict(list), defaultdict(list)
    for frame in captures["clients"]:
        e = endpoints(frame)
        if e and (e[0].lower(), e[3], e[4]) in names:
            in_from_clients[(e[0], e[1], e[2])].append(frame)
    for frame in captures["to-servers"]:
        e = endpoints(frame)
        if e and (e[0], e[1], e[2]) in in_from_clients:
            out_to_servers[(e[0], e[1], e[2])].append(frame)
    for frame in captures["servers"]:
        e = endpoints(frame)
        if e and (e[0], e[3], e[4]) in in_from_clients:
            in_from_servers[(e[0], e[3], e[4])].append(frame)
    for frame in captures["to-clients"]:
        e = endpoints(frame)
        if e and (e[0], e[3], e[4]) in in_from_clients:
            out_to_clients[(e[0], e[3], e[4])].append(frame)

    paragraph(f"{len(in_from_clients)} flows, each with both directions: a client's frame to "
              "vip:port leaves port 1 with the backend as its destination; the backend's reply "
              "leaves port 0 with vip:port as its source.")
    for key, frames in in_from_clients.items():
        proto, client_ip, client_port = key
        first = frames[0]
        vip, vport = endpoints(first)[3:]
        sent = out_to_servers.get(key, [])
        backend = address(*endpoints(sent[0])[3:]) if sent else "none (dropped)"
        print(f"\n  {proto} {address(client_ip, client_port)} -> "
              f"{names[(proto.lower(), vip, vport)]} {address(vip, vport)} -> backend {backend}")
        for i, frame in enumerate(frames):
            print(line("client -> port 0", frame))
            if i < len(sent):
                print(line("rplb -> server", sent[i], "destination rewritten"))
        replies, back = in_from_servers.get(key, []), out_to_clients.get(key, [])
        for i, frame in enumerate(replies):
            print(line("server -> port 1", frame))
            if i < len(back):
                print(line("rplb -> client", back[i], "source rewritten"))

    echo_requests = [f for f in captures["clients"]
                     if ICMP in f and f[ICMP].type == 8 or ICMPv6EchoRequest in f]
    echo_replies = [f for f in captures["to-clients"]
                    if ICMP in f and f[ICMP].type == 0 or ICMPv6EchoReply in f]
    if echo_requests:
        print("\npings to a VIP, answered by rplb itself (out of port 0, back to the client):")
        for request in echo_requests:
            ip = network(request)
            print(f"    client -> port 0  {ip.src} > {ip.dst} echo request")
        for reply in echo_replies:
            ip, check = network(reply), "checksums ok" if checksums_ok(reply) else "CHECKSUM WRONG"
            print(f"    rplb -> client    {ip.src} > {ip.dst} echo reply; {check}")

    print("\npassed through unchanged (not for a service):")
    handled = {id(f) for frames in (*in_from_clients.values(), *in_from_servers.values())
               for f in frames} | {id(f) for f in echo_requests}
    for source, sink, label in (("clients", "to-servers", "port 0 -> port 1"),
                                ("servers", "to-clients", "port 1 -> port 0")):
        out = [bytes(f) for f in captures[sink]]
        for frame in captures[source]:
            if id(frame) in handled:
                continue
            same = "identical" if bytes(frame) in out else "NOT FOUND on the other side"
            print(f"    {label}  {frame.summary():<56} {same}")

    for source, sink, end in (("clients", "to-servers", "src"), ("servers", "to-clients", "dst")):
        if reordered(captures[source], captures[sink], end):
            paragraph(f"order: frames left towards the {sink[3:]} in another order than they "
                      "came: within a burst, frames that pass through (and pings rplb "
                      "answers) leave at once, TCP/UDP frames for a service after the burst's "
                      "flow lookup; the frames of one flow always keep their order (README.md, "
                      "Behaviour on the wire).")
            break

    events = stats["events"]
    replies = sum(len(v) for v in in_from_servers.values())
    paragraph("the replies found their flows: rplb reads port 0 before port 1 in every turn of "
              "its loop, and clients.pcap fits in one burst, so every client frame was processed "
              "before the first reply arrived.  (A reply without its flow would still leave "
              "from vip:port, statelessly, since each backend belongs to one service; it would "
              "count as to_client_stateless instead.)")
    counters = " ".join(f"{name}={events[name]}" for name in (
        "to_client_by_flow", "to_client_stateless", "to_backend", "flows_created",
        "icmp_echo_replied", "passed_through"))
    drops = ", ".join(f"{k}={v}" for k, v in stats["drops"].items() if v) or "none"
    paragraph(f"rplb's counters: {replies} replies from backends, {counters}; drops: {drops}")
    paragraph("no rates: a replay of a few frames from a file has none worth quoting "
              "(rplb-dpdk --stats-period N prints them for live traffic).")


def reordered(sent, received, unchanged_end: str) -> bool:
    """Whether the frames that made it across left in another relative
    order.  A frame is recognised by the end rplb does not rewrite
    ("src" from clients, "dst" from servers) and its payload."""
    def key(frame):
        e = endpoints(frame)
        if e is None:
            return bytes(frame)
        end = (e[1], e[2]) if unchanged_end == "src" else (e[3], e[4])
        return (e[0], end, bytes(frame[TCP if e[0] == "TCP" else UDP].payload))

    position = {}
    for i, frame in enumerate(sent):
        position.setdefault(key(frame), []).append(i)
    order = []
    for frame in received:
        slots = position.get(key(frame))
        if slots:
            order.append(slots.pop(0))
    return order != sorted(order)


def service_names(path: Path):
    """{(proto, vip, port): name or vip:proto:port} of the services file."""
    from rplb.config import load_config
    return {(s.proto, str(s.vip), s.port): s.label for s in load_config(path).services}


if __name__ == "__main__":
    show(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else HERE / "services.yaml")
