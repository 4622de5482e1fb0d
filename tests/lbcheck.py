"""Independent checks for load-balanced packets: checksums recomputed by
scapy, and the backend a flow must get, predicted from the wire hash and a
pure-Python Maglev table (tests/maglev_reference.py)."""

from __future__ import annotations

import ipaddress
import struct
from typing import Dict, List, Tuple

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

import maglev_reference


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c_raw(data: bytes, crc: int = 0) -> int:
    """The SSE4.2 crc32 instruction chain rte_hash_crc() runs: reflected
    CRC-32C with the given initial value and no final inversion."""
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def flow_hash(client_ip: str, vip: str, client_port: int, vport: int, proto: int) -> int:
    """The hash rplb computes over the client-side 5-tuple (struct rplb_flow_key)."""
    key = (ipaddress.IPv4Address(client_ip).packed + ipaddress.IPv4Address(vip).packed
           + struct.pack("!HH", client_port, vport) + bytes([proto, 0, 0, 0]))
    return crc32c_raw(key)


#: csrc/steer.h: RPLB_STEER_SEED, RPLB_STEER_RETA_SIZE.
STEER_SEED = 0x9E3779B9
STEER_RETA_SIZE = 512


def steering_owner(client_ip: str, workers: int) -> int:
    """The worker that owns a client address with software steering: CRC32
    of the address as on the wire, into an indirection table filled round
    robin over the workers."""
    if workers < 2:
        return 0
    hash_value = crc32c_raw(ipaddress.IPv4Address(client_ip).packed, STEER_SEED)
    return (hash_value & (STEER_RETA_SIZE - 1)) % workers


def maglev_slot(hash_value: int, size: int) -> int:
    return (hash_value * size) >> 32


def expected_backend(service: dict, client_ip: str, client_port: int, size: int) -> Tuple[str, int]:
    """service: {'vip', 'proto', 'port', 'backends': [{'ip','port','weight'}]}."""
    backends = service["backends"]
    table = maglev_reference.build_table(
        [int(ipaddress.IPv4Address(b["ip"])) for b in backends],
        [b["port"] for b in backends], [b.get("weight", 1) for b in backends], size)
    proto = 6 if service["proto"] == "tcp" else 17
    owner = table[maglev_slot(flow_hash(client_ip, service["vip"], client_port,
                                        service["port"], proto), size)]
    return backends[owner]["ip"], backends[owner]["port"]


def assert_checksums_valid(frame: bytes) -> None:
    """Recompute the IPv4 and L4 checksums with scapy and compare.

    A UDP checksum of 0 means none and must stay 0; TCP's 0x0000 and 0xffff
    are the same one's-complement value."""
    pkt = Ether(frame)
    ip = pkt[IP]
    stored_ip = ip.chksum
    fresh = Ether(bytes(pkt))
    fresh[IP].chksum = None
    l4 = None
    for layer in (TCP, UDP, ICMP):
        if layer in fresh:
            l4 = layer
            break
    if l4 is not None:
        stored_l4 = pkt[l4].chksum
        fresh[l4].chksum = None
    rebuilt = Ether(bytes(fresh))
    assert stored_ip == rebuilt[IP].chksum, f"IPv4 checksum {stored_ip:#x} != {rebuilt[IP].chksum:#x}"
    if l4 is UDP and stored_l4 == 0:
        return
    if l4 is not None:
        want = rebuilt[l4].chksum
        ok = stored_l4 == want or {stored_l4, want} == {0, 0xFFFF} and l4 is TCP
        assert ok, f"{l4.__name__} checksum {stored_l4:#x} != {want:#x}"


def by_flow(frames: List[bytes], direction: str = "dst") -> Dict[Tuple, set]:
    """Map client (ip, port) -> set of (ip, port) seen on the other side."""
    seen: Dict[Tuple, set] = {}
    for frame in frames:
        pkt = Ether(frame)
        l4 = pkt[TCP] if TCP in pkt else pkt[UDP]
        if direction == "dst":
            client, other = (pkt[IP].src, l4.sport), (pkt[IP].dst, l4.dport)
        else:
            client, other = (pkt[IP].dst, l4.dport), (pkt[IP].src, l4.sport)
        seen.setdefault(client, set()).add(other)
    return seen


# ---- IPv6 (csrc/lb_ipv6.c, csrc/flow6_table.h) --------------------------------

def flow_hash6(client_ip: str, vip: str, client_port: int, vport: int, proto: int) -> int:
    """The hash rplb computes over an IPv6 client-side key (struct
    rplb_flow6_key: addresses, ports as on the wire, proto, direction 0,
    two zero bytes), the one its Maglev pick takes."""
    key = (ipaddress.IPv6Address(client_ip).packed + ipaddress.IPv6Address(vip).packed
           + struct.pack("!HH", client_port, vport) + bytes([proto, 0, 0, 0]))
    return crc32c_raw(key)


def steering_owner6(client_ip: str, workers: int) -> int:
    """The worker that owns an IPv6 client address with software steering:
    the address folded to 32 bits (XOR of its four words as loaded on a
    little-endian CPU), then as steering_owner."""
    if workers < 2:
        return 0
    packed = ipaddress.IPv6Address(client_ip).packed
    folded = 0
    for at in range(0, 16, 4):
        folded ^= int.from_bytes(packed[at:at + 4], "little")
    hash_value = crc32c_raw(folded.to_bytes(4, "little"), STEER_SEED)
    return (hash_value & (STEER_RETA_SIZE - 1)) % workers


def expected_backend6(service: dict, client_ip: str, client_port: int, size: int) -> Tuple[str, int]:
    """The backend the engine must pick for a new IPv6 flow: the Maglev
    table built by the reference from the backends' addresses (as the
    test driver builds it), indexed by flow_hash6."""
    backends = service["backends"]
    table = maglev_reference.build_table(
        [int(ipaddress.IPv6Address(b["ip"])) for b in backends],
        [b["port"] for b in backends], [b.get("weight", 1) for b in backends], size, family=6)
    proto = 6 if service["proto"] == "tcp" else 17
    owner = table[maglev_slot(flow_hash6(client_ip, service["vip"], client_port,
                                         service["port"], proto), size)]
    return backends[owner]["ip"], backends[owner]["port"]


def assert_checksums_valid6(frame: bytes) -> None:
    """Recompute an IPv6 frame's TCP, UDP or ICMPv6 checksum with scapy
    (its pseudo-header, extension headers skipped) and compare."""
    from scapy.layers.inet6 import IPv6, ICMPv6EchoReply, ICMPv6EchoRequest

    pkt = Ether(frame)
    assert IPv6 in pkt
    for layer in (TCP, UDP, ICMPv6EchoReply, ICMPv6EchoRequest):
        if layer in pkt:
            stored = pkt[layer].cksum if layer.__name__.startswith("ICMP") else pkt[layer].chksum
            fresh = Ether(frame)
            if layer.__name__.startswith("ICMP"):
                fresh[layer].cksum = None
                want = Ether(bytes(fresh))[layer].cksum
            else:
                fresh[layer].chksum = None
                want = Ether(bytes(fresh))[layer].chksum
            assert stored != 0 or layer is not UDP, "UDP over IPv6 left with checksum 0"
            ok = stored == want or ({stored, want} == {0, 0xFFFF} and layer is TCP)
            assert ok, f"{layer.__name__} checksum {stored:#x} != {want:#x}"
            return
    raise AssertionError("no TCP, UDP or ICMPv6 echo in the frame")
