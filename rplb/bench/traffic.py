"""The traffic rplb-bench replays: captures of 64-byte TCP frames to the
VIP, one frame per client 5-tuple (established flows or SYNs), and the
services file of the one service they reach."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

VIP = "10.0.0.100"
VIP_PORT = 80
N_BACKENDS = 16
FRAME_LEN = 64
CLIENT_NET = (198 << 24) | (18 << 16)      # 198.18.0.0/15, RFC 2544's benchmark range


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


def make_frames(n: int, syn: bool, first: int = 0) -> np.ndarray:
    """n valid 64-byte Ethernet/IPv4/TCP frames, client i -> VIP:80 (uint8, n x 64)."""
    src, sport = client_tuples(n, first)
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
    ip[:, 16:20] = [int(x) for x in VIP.split(".")]
    ip[:, 10:12] = _csum(ip.copy().view(">u2").reshape(n, 10)).astype(">u2").view(
        np.uint8).reshape(n, 2)
    tcp = f[:, 34:64]
    tcp[:, 0:2] = sport.astype(">u2").view(np.uint8).reshape(n, 2)
    tcp[:, 2:4] = (VIP_PORT >> 8, VIP_PORT & 255)
    tcp[:, 4:8] = (0, 0, 0x10, 0)                          # seq 4096
    tcp[:, 12] = 5 << 4
    tcp[:, 13] = 0x02 if syn else 0x10                     # SYN / ACK
    tcp[:, 14:16] = (0xFF, 0xFF)
    pseudo = np.zeros((n, 12), np.uint8)
    pseudo[:, 0:8] = ip[:, 12:20]
    pseudo[:, 9] = 6
    pseudo[:, 11] = FRAME_LEN - 34
    words = np.concatenate([pseudo.view(">u2").reshape(n, 6),
                            tcp.copy().view(">u2").reshape(n, 15)], axis=1)
    tcp[:, 16:18] = _csum(words).astype(">u2").view(np.uint8).reshape(n, 2)
    return f


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


def services_yaml(path: Path, flow_table_size: int) -> None:
    backends = "\n".join(f"      - {{ip: 192.168.1.{i + 1}, port: 8080}}"
                         for i in range(N_BACKENDS))
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
