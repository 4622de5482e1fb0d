"""The traffic rplb-bench replays: captures of 64-byte TCP frames to the
VIP, one frame per client 5-tuple (established flows or SYNs), and the
services file of the one service they reach.  For the cases of both
directions (issue 19), also the backend's replies, and the same over IPv6
(74-byte frames: Ethernet, IPv6 and TCP headers without options, the
smallest IPv6 TCP frame)."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

import numpy as np

VIP = "10.0.0.100"
VIP_PORT = 80
N_BACKENDS = 16
FRAME_LEN = 64
CLIENT_NET = (198 << 24) | (18 << 16)      # 198.18.0.0/15, RFC 2544's benchmark range
# The cases of both directions: one backend, so every reply comes from its
# flow's backend (Maglev's choice among several would have to be predicted).
BACKEND = "192.168.1.1"
BACKEND_PORT = 8080
VIP6 = "fd00::100"
BACKEND6 = "fd00:1::10"
FRAME_LEN6 = 74                            # 14 + 40 (IPv6) + 20 (TCP)
CLIENT_NET6 = "2001:2::"                   # 2001:2::/48, RFC 5180's benchmark range
ACK = 0x10


def _csum(words: np.ndarray) -> np.ndarray:
    """Internet checksum of each row of big-endian 16-bit words."""
    s = words.astype(np.uint64).sum(axis=1)
    while np.any(s >> 16):
        s = (s & 0xFFFF) + (s >> 16)
    return (~s & 0xFFFF).astype(np.uint16)


def client_tuples(n: int, first: int = 0):
    """Source (ip, port) of client n: unique for n < 65,536 * 60,000."""
    i = np.arange(first, first + n, dtype=np.uint64)
    ips = (CLIENT_NET + (i % 65536)).astype(np.uint32)
    ports = (1024 + (i // 65536) % 60000).astype(np.uint16)
    return ips, ports


def _fill_tcp(tcp: np.ndarray, sport, dport, flags: int) -> None:
    """The TCP header of both families' frames, its checksum apart: one
    row per frame, ports uint16 in host order, seq 4096, no options."""
    n = tcp.shape[0]
    tcp[:, 0:2] = sport.astype(">u2").view(np.uint8).reshape(n, 2)
    tcp[:, 2:4] = dport.astype(">u2").view(np.uint8).reshape(n, 2)
    tcp[:, 4:8] = (0, 0, 0x10, 0)                          # seq 4096
    tcp[:, 12] = 5 << 4
    tcp[:, 13] = flags
    tcp[:, 14:16] = (0xFF, 0xFF)


def tcp_frames(src, sport, dst, dport, flags: int) -> np.ndarray:
    """Valid 64-byte Ethernet/IPv4/TCP frames src:sport -> dst:dport (uint32
    addresses and uint16 ports in host order, arrays of one length or
    scalars), one per row (uint8, n x 64)."""
    src, sport, dst, dport = np.broadcast_arrays(
        np.asarray(src, np.uint32), np.asarray(sport, np.uint16),
        np.asarray(dst, np.uint32), np.asarray(dport, np.uint16))
    n = src.shape[0]
    f = np.zeros((n, FRAME_LEN), np.uint8)
    f[:, 0:6] = (2, 0, 0, 0, 0, 1)
    f[:, 6:12] = (2, 0, 0, 0, 0, 0xC1)
    f[:, 12:14] = (8, 0)
    ip = f[:, 14:34]
    ip[:, 0] = 0x45
    ip[:, 2:4] = (0, FRAME_LEN - 14)
    ip[:, 8] = 64
    ip[:, 9] = 6
    ip[:, 12:16] = src.astype(">u4").view(np.uint8).reshape(n, 4)
    ip[:, 16:20] = dst.astype(">u4").view(np.uint8).reshape(n, 4)
    ip[:, 10:12] = _csum(ip.copy().view(">u2").reshape(n, 10)).astype(">u2").view(
        np.uint8).reshape(n, 2)
    tcp = f[:, 34:64]
    _fill_tcp(tcp, sport, dport, flags)
    pseudo = np.zeros((n, 12), np.uint8)
    pseudo[:, 0:8] = ip[:, 12:20]
    pseudo[:, 9] = 6
    pseudo[:, 11] = FRAME_LEN - 34
    words = np.concatenate([pseudo.view(">u2").reshape(n, 6),
                            tcp.copy().view(">u2").reshape(n, 15)], axis=1)
    tcp[:, 16:18] = _csum(words).astype(">u2").view(np.uint8).reshape(n, 2)
    return f


def client6_tuples(n: int, first: int = 0):
    """Source (address, port) of IPv6 client n: addresses as rows of 16
    bytes (network order), 2001:2::/48 plus n mod 65,536; ports as IPv4's."""
    i = np.arange(first, first + n, dtype=np.uint64)
    ips = np.tile(np.frombuffer(ipaddress.IPv6Address(CLIENT_NET6).packed, np.uint8), (n, 1))
    ips[:, 14:16] = (i % 65536).astype(">u2").view(np.uint8).reshape(n, 2)
    _, ports = client_tuples(n, first)
    return ips, ports


def ipv6(text: str) -> np.ndarray:
    return np.frombuffer(ipaddress.IPv6Address(text).packed, np.uint8)


def tcp6_frames(src, sport, dst, dport, flags: int) -> np.ndarray:
    """Valid 74-byte Ethernet/IPv6/TCP frames src:sport -> dst:dport
    (addresses as rows of 16 bytes or one such row, ports uint16 in host
    order), one per row (uint8, n x 74)."""
    src = np.atleast_2d(np.asarray(src, np.uint8))
    dst = np.atleast_2d(np.asarray(dst, np.uint8))
    sport, dport = np.asarray(sport, np.uint16), np.asarray(dport, np.uint16)
    n = max(src.shape[0], dst.shape[0], sport.size, dport.size)
    src, dst = np.broadcast_to(src, (n, 16)), np.broadcast_to(dst, (n, 16))
    sport, dport = np.broadcast_to(sport, (n,)), np.broadcast_to(dport, (n,))
    f = np.zeros((n, FRAME_LEN6), np.uint8)
    f[:, 0:6] = (2, 0, 0, 0, 0, 1)
    f[:, 6:12] = (2, 0, 0, 0, 0, 0xC1)
    f[:, 12:14] = (0x86, 0xDD)
    ip = f[:, 14:54]
    ip[:, 0] = 0x60
    ip[:, 4:6] = (0, FRAME_LEN6 - 54)      # payload length: the TCP header
    ip[:, 6] = 6
    ip[:, 7] = 64
    ip[:, 8:24] = src
    ip[:, 24:40] = dst
    tcp = f[:, 54:74]
    _fill_tcp(tcp, sport, dport, flags)
    pseudo = np.zeros((n, 40), np.uint8)                   # RFC 8200 8.1
    pseudo[:, 0:32] = ip[:, 8:40]
    pseudo[:, 35] = FRAME_LEN6 - 54
    pseudo[:, 39] = 6
    words = np.concatenate([pseudo.view(">u2").reshape(n, 20),
                            tcp.copy().view(">u2").reshape(n, 10)], axis=1)
    tcp[:, 16:18] = _csum(words).astype(">u2").view(np.uint8).reshape(n, 2)
    return f


def both_directions_frames(n_flows: int, family: int):
    """The clients' ACKs to the VIP and the backend's replies to them, one
    frame per flow each: (clients, replies), rows of 64 (IPv4) or 74 (IPv6)
    bytes."""
    if family == 6:
        ips, ports = client6_tuples(n_flows)
        return (tcp6_frames(ips, ports, ipv6(VIP6), VIP_PORT, ACK),
                tcp6_frames(ipv6(BACKEND6), BACKEND_PORT, ips, ports, ACK))
    ips, ports = client_tuples(n_flows)
    return (tcp_frames(ips, ports, ipv4(VIP), VIP_PORT, ACK),
            tcp_frames(ipv4(BACKEND), BACKEND_PORT, ips, ports, ACK))


def ipv4(text: str) -> int:
    return int.from_bytes(bytes(int(x) for x in text.split(".")), "big")


def make_frames(n: int, syn: bool, first: int = 0) -> np.ndarray:
    """n valid 64-byte Ethernet/IPv4/TCP frames, client i -> VIP:80 (uint8, n x 64)."""
    src, sport = client_tuples(n, first)
    return tcp_frames(src, sport, ipv4(VIP), VIP_PORT, 0x02 if syn else 0x10)   # SYN / ACK


def write_frames(path: Path, frames: np.ndarray) -> int:
    """A pcap of these frames (rows of equal length); returns their count."""
    length = frames.shape[1]
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        rec = np.zeros((frames.shape[0], 16 + length), np.uint8)
        rec[:, 8:16] = np.frombuffer(struct.pack("<II", length, length), np.uint8)
        rec[:, 16:] = frames
        out.write(rec.tobytes())
    return frames.shape[0]


def write_capture(path: Path, n_flows: int, syn: bool) -> int:
    """A pcap with one frame per flow; returns the frame count."""
    chunk = 1 << 18
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for first in range(0, n_flows, chunk):
            n = min(chunk, n_flows - first)
            rec = np.zeros((n, 16 + FRAME_LEN), np.uint8)
            rec[:, 8:16] = np.frombuffer(struct.pack("<II", FRAME_LEN, FRAME_LEN), np.uint8)
            rec[:, 16:] = make_frames(n, syn, first)
            out.write(rec.tobytes())
    return n_flows


def services_yaml(path: Path, flow_table_size: int, n_backends: int = N_BACKENDS) -> None:
    backends = "\n".join(f"      - {{ip: 192.168.1.{i + 1}, port: 8080}}"
                         for i in range(n_backends))
    path.write_text(f"""\
# rplb-bench: one TCP service covering the capture's traffic.
flow_table_size: {flow_table_size}
timeouts: {{tcp: 300, udp: 60, tcp_syn: 300, tcp_fin: 10}}
services:
  - name: bench
    vip: {VIP}
    proto: tcp
    port: {VIP_PORT}
    backends:
{backends}
""")


def services6_yaml(path: Path, flow_table_size: int) -> None:
    """The IPv6 twin of services_yaml(..., n_backends=1)."""
    path.write_text(f"""\
# rplb-bench: one IPv6 TCP service covering the capture's traffic.
flow_table_size: {flow_table_size}
timeouts: {{tcp: 300, udp: 60, tcp_syn: 300, tcp_fin: 10}}
services:
  - name: web6
    vip: "{VIP6}"
    proto: tcp
    port: {VIP_PORT}
    backends:
      - {{ip: "{BACKEND6}", port: {BACKEND_PORT}, weight: 1}}
""")
