"""rplb running on two net_tap ports, fed and watched live from the kernel.

Frames sent with scapy on the frontend tap reach rplb's port 0; what rplb
sends out of port 1 is captured on the backend tap (and vice versa).  Used
for what a file cannot do: signals between phases of traffic, and the TX
checksum offload path (net_tap implements the offload flags in software).
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from typing import Callable, List

from scapy.arch.linux import L2ListenSocket
from scapy.config import conf
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.sendrecv import AsyncSniffer, sendp

from harness import LiveRplb, eal_args, file_prefix
from rplb.control import request


def client_segments(flows, flags, vip="10.0.0.100"):
    """One TCP segment with these flags from each (client ip, port) of
    flows to vip:80, as the clients' side of the wire sends them."""
    return [Ether(src="02:00:00:00:00:c1", dst="02:00:00:00:00:1b")
            / IP(src=ip, dst=vip) / TCP(sport=port, dport=80, flags=flags) / Raw(b"data")
            for ip, port in flows]


def from_test_clients(pkt) -> bool:
    """A frame of the test clients (100.64.0.0/16), seen on the backend side."""
    return IP in pkt and pkt[IP].src.startswith("100.64.")

conf.verb = 0
# IEEE 802's local experimental EtherType: not IPv4, so rplb passes it through.
MARKER_ETHERTYPE = 0x88B5
_names = itertools.count()

# <linux/if_packet.h>: getsockopt(SOL_PACKET, PACKET_STATISTICS) gives
# struct tpacket_stats {unsigned tp_packets, tp_drops} and resets it.
SOL_PACKET, PACKET_STATISTICS = 263, 6
SO_RCVBUFFORCE = 33              # <asm-generic/socket.h>; Python's socket lacks it
# Room for every frame of an exchange while the capture thread waits for the
# GIL (scapy asks for 64 KiB: about a hundred small frames on a tap).
CAPTURE_BUFFER = 32 << 20


class Capture:
    """A capture of every frame seen on an interface, handed to prn in a
    thread of its own (scapy's AsyncSniffer) from a socket with room for a
    whole exchange; dropped() says how many frames the socket had to drop.

    The thread shares the GIL with the test that sends: on a loaded machine
    it fell a few hundred frames behind, scapy's 64 KiB buffer overflowed and
    a frame rplb had sent was missing from the capture."""

    def __init__(self, iface: str, prn: Callable):
        self.socket = L2ListenSocket(iface=iface)
        try:
            self.socket.ins.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE,
                                       CAPTURE_BUFFER)
        except PermissionError:          # without CAP_NET_ADMIN: up to rmem_max
            self.socket.ins.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CAPTURE_BUFFER)
        self.socket.ins.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)   # from now on
        self.started = threading.Event()
        self._sniffer = AsyncSniffer(opened_socket=self.socket, prn=prn, store=False,
                                     started_callback=self.started.set)

    def start(self, timeout: float) -> None:
        self._sniffer.start()
        if not self.started.wait(timeout):
            raise AssertionError(f"the capture on {self.socket.iface} did not start")

    def dropped(self) -> int:
        """Frames the socket dropped since the last call."""
        _, drops = struct.unpack("II", self.socket.ins.getsockopt(
            SOL_PACKET, PACKET_STATISTICS, 8))
        return drops

    def stop(self) -> None:
        try:
            if self._sniffer.running:
                self._sniffer.stop()
        finally:
            self.socket.close()


class TapWire:
    def __init__(self, tmp_path, rplb_args=(), lcores="0-1"):
        n = f"{os.getpid() % 10000}{next(_names)}"
        self.frontend_if, self.backend_if = f"rpf{n}", f"rpb{n}"
        self.prefix = file_prefix()
        argv = [*eal_args(self.prefix, [f"net_tap0,iface={self.frontend_if}",
                                        f"net_tap1,iface={self.backend_if}"], lcores),
                "--", "--stats-json", str(tmp_path / "stats.json"),
                "--control-socket", str(tmp_path / "rplb.sock"), *rplb_args]
        # The last --control-socket given is the one rplb listens on.
        self.socket = [argv[i + 1] for i, a in enumerate(argv) if a == "--control-socket"][-1]
        self.stats_path = tmp_path / "stats.json"
        self.rplb = LiveRplb(argv, self.prefix, cwd=tmp_path)
        try:
            self.rplb.wait_for_stderr("forwarding with")
            for ifname in (self.frontend_if, self.backend_if):
                # Keep the kernel's own IPv6 chatter (router solicitations) off the wire.
                subprocess.run(["sysctl", "-qw", f"net.ipv6.conf.{ifname}.disable_ipv6=1"],
                               check=False, capture_output=True)
        except BaseException:
            self.rplb.stop()
            raise

    def received(self, side: int) -> int:
        """Frames rplb has read from port `side` (0: frontend, 1: backend)."""
        return request(self.socket, {"cmd": "stats"})["stats"]["port"][side]["rx_packets"]

    def exchange(self, frames, out_side: int, match: Callable = None,
                 timeout: float = 10.0) -> List[Ether]:
        """Send frames into rplb's port out_side; return the matching frames
        seen leaving its other port.

        Waits on what it can observe, never on time: the capture is open
        before the first frame leaves (the sniffer's started callback);
        then rplb's rx counter shows it has read every frame; then a marker
        frame follows, which rplb passes through unchanged (an EtherType it
        does not handle).  The marker is in a later rx burst than every
        frame, and rplb hands a burst's frames to its tx buffer before it
        reads the next burst: once the marker is seen, whatever rplb sent
        for the frames has been seen.  (Within one burst the marker could
        overtake them: pass-through frames leave before looked-up ones.)"""
        out_iface, in_iface = ((self.frontend_if, self.backend_if) if out_side == 0
                               else (self.backend_if, self.frontend_if))
        match = match or (lambda p: IP in p)
        frames = list(frames)
        nonce = os.urandom(16)
        marker = Ether(src="02:00:00:00:00:c1", dst="02:00:00:00:00:1b",
                       type=MARKER_ETHERTYPE) / Raw(nonce)
        seen = []
        marker_seen = threading.Event()

        def keep(pkt):
            if Ether in pkt and pkt[Ether].type == MARKER_ETHERTYPE:
                if bytes(pkt[Ether].payload)[:len(nonce)] == nonce:
                    marker_seen.set()
            elif match(pkt):
                seen.append(pkt)
        # scapy fills sniffer.results only at stop(): collect as they arrive.
        capture = Capture(in_iface, keep)
        try:
            capture.start(timeout)
            received = self.received(out_side)
            sendp(frames, iface=out_iface)
            deadline = time.monotonic() + timeout
            while self.received(out_side) < received + len(frames):
                if time.monotonic() > deadline:
                    raise AssertionError(f"rplb did not read the {len(frames)} frames sent "
                                         f"on {out_iface} within {timeout} s")
                time.sleep(0.01)
            sendp(marker, iface=out_iface)
            if not marker_seen.wait(timeout):
                raise AssertionError(f"the marker frame did not come through rplb to "
                                     f"{in_iface} within {timeout} s ({len(seen)} frames seen)")
            dropped = capture.dropped()
            if dropped:
                raise AssertionError(f"the capture on {in_iface} dropped {dropped} frames "
                                     f"({len(seen)} seen): the test, not rplb, lost them")
        finally:
            capture.stop()
        return list(seen)

    def to_backends(self, frames, match=None, timeout=10.0):
        return self.exchange(frames, 0, match, timeout)

    def to_clients(self, frames, match=None, timeout=10.0):
        return self.exchange(frames, 1, match, timeout)

    def reload(self) -> str:
        """SIGHUP; returns rplb's log line about it."""
        self.rplb.signal(signal.SIGHUP)
        return self.rplb.wait_for_stderr("SIGHUP")

    def stop(self):
        rc, out = self.rplb.stop()
        return rc, out
