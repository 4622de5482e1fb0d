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
import subprocess
import threading
import time
from typing import Callable, List

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
        started, marker_seen = threading.Event(), threading.Event()

        def keep(pkt):
            if Ether in pkt and pkt[Ether].type == MARKER_ETHERTYPE:
                if bytes(pkt[Ether].payload)[:len(nonce)] == nonce:
                    marker_seen.set()
            elif match(pkt):
                seen.append(pkt)
        # scapy fills sniffer.results only at stop(): collect as they arrive.
        sniffer = AsyncSniffer(iface=in_iface, prn=keep, store=False,
                               started_callback=started.set)
        sniffer.start()
        try:
            if not started.wait(timeout):
                raise AssertionError(f"the capture on {in_iface} did not start")
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
        finally:
            sniffer.stop()
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
