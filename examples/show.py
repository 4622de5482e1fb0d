#!/usr/bin/env python3
"""Print what rplb did: each frame in, and what left the other port."""

import sys

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap


def describe(frame) -> str:
    if IP not in frame:
        return frame.summary()
    ip = frame[IP]
    for layer, name in ((TCP, "TCP"), (UDP, "UDP")):
        if layer in frame:
            return f"{name} {ip.src}:{frame[layer].sport} -> {ip.dst}:{frame[layer].dport}"
    if ICMP in frame:
        kind = {8: "echo-request", 0: "echo-reply"}.get(frame[ICMP].type, f"type {frame[ICMP].type}")
        return f"ICMP {kind} {ip.src} -> {ip.dst}"
    return f"IP proto {ip.proto} {ip.src} -> {ip.dst}"


def show(title, sent, received) -> None:
    print(f"\n{title}: {len(sent)} frames in, {len(received)} frames out")
    for frame in received:
        print(f"  out: {describe(frame)}")


if __name__ == "__main__":
    directory = sys.argv[1]
    clients, servers = rdpcap(f"{directory}/clients.pcap"), rdpcap(f"{directory}/servers.pcap")
    to_servers = rdpcap(f"{directory}/to-servers.pcap")
    to_clients = rdpcap(f"{directory}/to-clients.pcap")
    print("frames from clients (port 0):")
    for frame in clients:
        print(f"  in:  {describe(frame)}")
    show("left the backend port 1 (rewritten to backends, or passed through)", clients, to_servers)
    print("\nframes from servers (port 1):")
    for frame in servers:
        print(f"  in:  {describe(frame)}")
    show("left the frontend port 0 (replies from VIPs, echo replies, passed through)",
         servers, to_clients)
