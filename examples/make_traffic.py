#!/usr/bin/env python3
"""Write the example captures for services.yaml:

clients.pcap  what arrives on the frontend port: TCP sessions to web
              (10.0.0.100:80) and api (10.0.0.101:443), DNS queries over UDP to
              10.0.0.100:53, pings to both VIPs, and traffic rplb must pass
              through untouched (ARP, IPv6, IPv4 to a non-VIP address);
servers.pcap  what arrives on the backend port: replies from backends.
"""

import sys

from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

CLIENT_MAC, ROUTER_MAC = "02:00:00:00:00:c1", "02:00:00:00:00:01"


def clients():
    frames = []
    for i in range(12):
        ip = f"203.0.113.{10 + i}"
        frames.append(Ether(src=CLIENT_MAC, dst=ROUTER_MAC) / IP(src=ip, dst="10.0.0.100")
                      / TCP(sport=40000 + i, dport=80, flags="S", seq=1000))
        frames.append(Ether(src=CLIENT_MAC, dst=ROUTER_MAC) / IP(src=ip, dst="10.0.0.100")
                      / TCP(sport=40000 + i, dport=80, flags="PA", seq=1001, ack=1)
                      / Raw(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n"))
    for i in range(4):
        frames.append(Ether(src=CLIENT_MAC, dst=ROUTER_MAC)
                      / IP(src=f"198.51.100.{i + 1}", dst="10.0.0.101")
                      / TCP(sport=50000 + i, dport=443, flags="S"))
        frames.append(Ether(src=CLIENT_MAC, dst=ROUTER_MAC)
                      / IP(src=f"198.51.100.{i + 1}", dst="10.0.0.100")
                      / UDP(sport=33000 + i, dport=53) / DNS(rd=1, qd=DNSQR(qname="example.org")))
    for vip in ("10.0.0.100", "10.0.0.101"):
        frames.append(Ether(src=CLIENT_MAC, dst=ROUTER_MAC) / IP(src="203.0.113.99", dst=vip)
                      / ICMP(type=8, id=1, seq=1) / Raw(b"ping"))
    frames.append(Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff")
                  / ARP(op=1, psrc="203.0.113.99", pdst="203.0.113.1"))
    frames.append(Ether(src=CLIENT_MAC, dst=ROUTER_MAC)
                  / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=1, dport=2))
    frames.append(Ether(src=CLIENT_MAC, dst=ROUTER_MAC) / IP(src="203.0.113.99", dst="10.9.9.9")
                  / TCP(sport=1234, dport=80, flags="S"))
    return frames


def servers():
    # Replies from each web backend to a client that never went through this
    # rplb (e.g. after a restart): rewritten statelessly, each backend ip:port
    # belongs to one service.
    frames = []
    for n, backend in enumerate(("192.168.1.10", "192.168.1.11", "192.168.1.12")):
        frames.append(Ether(src="02:00:00:00:00:5e", dst=ROUTER_MAC)
                      / IP(src=backend, dst=f"203.0.113.{200 + n}")
                      / TCP(sport=8080, dport=45000 + n, flags="SA", ack=1001))
    frames.append(Ether(src="02:00:00:00:00:5e", dst=ROUTER_MAC)
                  / IP(src="192.168.1.20", dst="198.51.100.50") / UDP(sport=5353, dport=33999)
                  / DNS(qr=1, qd=DNSQR(qname="example.org")))
    return frames


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    wrpcap(f"{out}/clients.pcap", clients())
    wrpcap(f"{out}/servers.pcap", servers())
