#!/usr/bin/env python3
"""Write the example's captures for services.yaml (a maintainer's tool:
run.sh only replays them).

clients.pcap  what arrives on the frontend port: TCP connections to web
              (10.0.0.100:80), api (10.0.0.101:443) and web6
              ([fd00::100]:80, over IPv6), DNS queries over UDP to dns
              (10.0.0.100:53), a ping to each VIP (ping -6 to web6's), and
              frames rplb passes through unchanged (ARP, an IPv6 neighbour
              solicitation, IPv6 and IPv4 to addresses that are no VIP).
servers.pcap  what arrives on the backend port: each backend's reply to
              exactly the client flows rplb sent it (SYN-ACKs, an HTTP
              response, DNS answers), and an ARP reply, which passes through.

Which backend a flow reaches is rplb's choice (Maglev over the flow's
hash), so this script asks rplb: it replays clients.pcap once and reads
which backend each flow went to, then writes the replies from those
backends.  Run it again (as root, from the checkout's venv) whenever the
flow hash or the Maglev fill changes; tests/test_example.py fails until
then (the replies would no longer find their flows).

    .venv/bin/python examples/make_traffic.py [DIR]
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6ND_NS, IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw
from scapy.utils import rdpcap, wrpcap

HERE = Path(__file__).resolve().parent
CLIENT_MAC, ROUTER_MAC, SERVER_MAC = "02:00:00:00:00:c1", "02:00:00:00:00:01", "02:00:00:00:00:5e"
WEB_VIP, API_VIP, WEB6_VIP = "10.0.0.100", "10.0.0.101", "fd00::100"
REQUEST = b"GET / HTTP/1.1\r\nHost: web\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhi\n"


def network(src, dst):
    """The IP header of src -> dst, IPv4 or IPv6 by their spelling."""
    return IPv6(src=src, dst=dst) if ":" in dst else IP(src=src, dst=dst)


def client(ip, vip, layer4, payload=b""):
    frame = Ether(src=CLIENT_MAC, dst=ROUTER_MAC) / network(ip, vip) / layer4
    return frame / Raw(payload) if payload else frame


def clients():
    frames = []
    for i in range(4):          # web: SYN, then the request
        ip, port = f"203.0.113.{10 + i}", 40000 + i
        frames.append(client(ip, WEB_VIP, TCP(sport=port, dport=80, flags="S", seq=1000)))
        frames.append(client(ip, WEB_VIP, TCP(sport=port, dport=80, flags="PA", seq=1001,
                                              ack=5001), REQUEST))
    for i in range(2):          # web6: SYN, then the request, over IPv6
        ip, port = f"2001:db8:c::{10 + i:x}", 41000 + i
        frames.append(client(ip, WEB6_VIP, TCP(sport=port, dport=80, flags="S", seq=3000)))
        frames.append(client(ip, WEB6_VIP, TCP(sport=port, dport=80, flags="PA", seq=3001,
                                               ack=5001), REQUEST))
    for i in range(2):          # api: a SYN each
        frames.append(client(f"198.51.100.{1 + i}", API_VIP,
                             TCP(sport=50000 + i, dport=443, flags="S", seq=7000)))
    for i in range(3):          # dns: a query each, over UDP
        frames.append(client(f"198.51.100.{11 + i}", WEB_VIP, UDP(sport=33000 + i, dport=53)
                             / DNS(id=i + 1, rd=1, qd=DNSQR(qname="example.org"))))
    for vip in (WEB_VIP, API_VIP):
        frames.append(client("203.0.113.99", vip, ICMP(type=8, id=1, seq=1), b"ping"))
    frames.append(client("2001:db8:c::99", WEB6_VIP, ICMPv6EchoRequest(id=1, seq=1, data=b"ping")))
    frames.append(Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff")
                  / ARP(op=1, hwsrc=CLIENT_MAC, psrc="203.0.113.99", pdst="203.0.113.1"))
    frames.append(Ether(src=CLIENT_MAC, dst="33:33:ff:00:00:01")
                  / IPv6(src="fe80::c1", dst="ff02::1:ff00:1", hlim=255)
                  / ICMPv6ND_NS(tgt="2001:db8:c::1"))
    frames.append(Ether(src=CLIENT_MAC, dst=ROUTER_MAC)
                  / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=1, dport=2))
    frames.append(client("203.0.113.99", "10.9.9.9", TCP(sport=1234, dport=80, flags="S")))
    return frames


def where_flows_went(frames):
    """{(proto, client ip, client port): (backend ip, backend port)}, asked
    of rplb itself: clients.pcap replayed once, to-servers.pcap read."""
    scratch = Path(tempfile.mkdtemp(prefix="rplb-make-traffic."))
    prefix = f"rplb-make-traffic-{os.getpid()}"
    try:
        wrpcap(str(scratch / "clients.pcap"), frames)
        wrpcap(str(scratch / "servers.pcap"), [Ether(src=SERVER_MAC, dst=ROUTER_MAC)
                                                / ARP(op=2, psrc="192.168.1.1")])
        subprocess.run(
            [sys.executable, "-m", "rplb", "--no-huge", "-m", "512", "--no-pci", "-l", "0-1",
             "--file-prefix", prefix, "--log-level=*:warning",
             "--vdev", f"net_pcap0,rx_pcap={scratch}/clients.pcap,"
                       f"tx_pcap={scratch}/to-clients.pcap",
             "--vdev", f"net_pcap1,rx_pcap={scratch}/servers.pcap,"
                       f"tx_pcap={scratch}/to-servers.pcap",
             "--", "--config", str(HERE / "services.yaml"), "--duration", "1",
             "--control-socket", "none"], check=True, cwd=scratch, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        chosen = {}
        for frame in rdpcap(str(scratch / "to-servers.pcap")):
            ip = frame[IP] if IP in frame else frame[IPv6] if IPv6 in frame else None
            for layer, proto in ((TCP, "tcp"), (UDP, "udp")):
                if ip is not None and layer in frame:
                    l4 = frame[layer]
                    chosen[(proto, ip.src, l4.sport)] = (ip.dst, l4.dport)
        return chosen
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)


def servers(client_frames):
    """Each backend's replies to the flows rplb gave it, in the order the
    clients opened them, then an ARP reply (passed through)."""
    chosen = where_flows_went(client_frames)
    frames = []

    def reply(proto, frame, layer4, payload=b""):
        ip = frame[IP] if IP in frame else frame[IPv6]
        sport = frame[TCP].sport if proto == "tcp" else frame[UDP].sport
        backend_ip, backend_port = chosen[(proto, ip.src, sport)]
        layer4.sport, layer4.dport = backend_port, sport
        out = Ether(src=SERVER_MAC, dst=ROUTER_MAC) / network(backend_ip, ip.src) / layer4
        frames.append(out / Raw(payload) if payload else out)

    for frame in client_frames:
        ip = frame[IP] if IP in frame else frame[IPv6] if IPv6 in frame else None
        if ip is None:
            continue
        if TCP in frame and ip.dst in (WEB_VIP, API_VIP, WEB6_VIP):
            tcp = frame[TCP]
            if tcp.flags == "S":
                reply("tcp", frame, TCP(flags="SA", seq=5000, ack=tcp.seq + 1))
            else:
                reply("tcp", frame, TCP(flags="PA", seq=5001, ack=tcp.seq + len(REQUEST)),
                      RESPONSE)
        elif UDP in frame and ip.dst == WEB_VIP and frame[UDP].dport == 53:
            query = frame[DNS]
            reply("udp", frame, UDP() / DNS(id=query.id, qr=1, rd=1, ra=1, qd=query.qd,
                                            an=DNSRR(rrname="example.org", rdata="192.0.2.1")))
    frames.append(Ether(src=SERVER_MAC, dst="02:00:00:00:00:01")
                  / ARP(op=2, hwsrc=SERVER_MAC, psrc="192.168.1.1",
                        hwdst="02:00:00:00:00:01", pdst="192.168.1.254"))
    return frames


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else HERE)
    client_frames = clients()
    server_frames = servers(client_frames)
    wrpcap(str(out / "clients.pcap"), client_frames)
    wrpcap(str(out / "servers.pcap"), server_frames)
    print(f"wrote {out}/clients.pcap ({len(client_frames)} frames) and "
          f"{out}/servers.pcap ({len(server_frames)} frames)")
