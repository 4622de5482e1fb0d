"""The few rtnetlink requests rplb makes of the kernel: give an interface an
IPv4 address and bring it up (the appliance's own interface on the backend
network, rplb.kernel_interface).

A netlink socket of the standard library, not `ip` in a subprocess: no
dependency on iproute2's binaries or their output, no fork of a process
that holds gigabytes of DPDK memory, and the kernel's errno comes back
as is.  Each request asks for an acknowledgement and waits for it.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import socket
import struct
from typing import Union

__all__ = ["NetlinkError", "add_address", "set_up", "disable_ipv6"]

# linux/netlink.h, linux/rtnetlink.h, linux/if_addr.h, linux/if.h
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x001
NLM_F_ACK = 0x004
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
RTM_NEWLINK = 16
RTM_NEWADDR = 20
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_BROADCAST = 4
IFF_UP = 0x1
RT_SCOPE_UNIVERSE = 0

_NLMSGHDR = struct.Struct("=IHHII")      # length, type, flags, seq, pid
_IFADDRMSG = struct.Struct("=BBBBi")     # family, prefixlen, flags, scope, index
_IFINFOMSG = struct.Struct("=BxHiII")    # family, type, index, flags, change
_RTATTR = struct.Struct("=HH")           # length, type
_sequence = itertools.count(1)


class NetlinkError(OSError):
    """The kernel refused a request (errno and strerror as for OSError)."""


def _attribute(kind: int, data: bytes) -> bytes:
    length = _RTATTR.size + len(data)
    return _RTATTR.pack(length, kind) + data + b"\0" * (-length % 4)


def _request(kind: int, flags: int, body: bytes, what: str) -> None:
    """Send one request and wait for its acknowledgement; NetlinkError
    (with the kernel's errno) when it is refused."""
    seq = next(_sequence)
    message = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind,
                             NLM_F_REQUEST | NLM_F_ACK | flags, seq, 0) + body
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                       socket.NETLINK_ROUTE) as sock:
        sock.settimeout(5.0)
        sock.bind((0, 0))
        sock.send(message)
        while True:
            reply = sock.recv(65536)
            at = 0
            while at + _NLMSGHDR.size <= len(reply):
                length, reply_kind, _, reply_seq, _ = _NLMSGHDR.unpack_from(reply, at)
                if length < _NLMSGHDR.size:
                    raise NetlinkError(errno.EPROTO, f"{what}: a malformed netlink reply")
                if reply_kind == NLMSG_ERROR and reply_seq == seq:
                    (code,) = struct.unpack_from("=i", reply, at + _NLMSGHDR.size)
                    if code == 0:
                        return
                    raise NetlinkError(-code, f"{what}: {os.strerror(-code)}")
                at += (length + 3) & ~3


def _index(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise NetlinkError(errno.ENODEV, f"no network interface {ifname}") from None


def add_address(ifname: str, interface: Union[str, ipaddress.IPv4Interface]) -> None:
    """Give ifname the IPv4 address interface ("10.10.0.2/24"), with its
    broadcast address; the kernel adds the subnet's route.  NetlinkError
    (EEXIST when it has that address already)."""
    interface = ipaddress.IPv4Interface(interface)
    address = interface.ip.packed
    body = _IFADDRMSG.pack(socket.AF_INET, interface.network.prefixlen, 0, RT_SCOPE_UNIVERSE,
                           _index(ifname))
    body += _attribute(IFA_LOCAL, address) + _attribute(IFA_ADDRESS, address)
    if interface.network.prefixlen < 31:
        body += _attribute(IFA_BROADCAST, interface.network.broadcast_address.packed)
    _request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body,
             f"cannot give {ifname} the address {interface}")


def set_up(ifname: str) -> None:
    """Bring ifname up (NetlinkError)."""
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, _index(ifname), IFF_UP, IFF_UP)
    _request(RTM_NEWLINK, 0, body, f"cannot bring {ifname} up")


def disable_ipv6(ifname: str) -> bool:
    """Keep ifname from sending IPv6 (router solicitations, neighbour
    discovery, MLD reports) onto the backend network: rplb speaks IPv4
    there.  False where the kernel has no IPv6."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "w") as knob:
            knob.write("1")
    except FileNotFoundError:
        return False
    return True
