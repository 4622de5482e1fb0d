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
import time
from typing import Callable, List

from scapy.config import conf
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.sendrecv import AsyncSniffer, sendp

from harness import LiveRplb, eal_args, file_prefix


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

    def exchange(self, frames, out_iface: str, in_iface: str, expect: int,
                 match: Callable = None, timeout: float = 10.0) -> List[Ether]:
        """Send frames on out_iface; return the matching frames seen on in_iface."""
        match = match or (lambda p: IP in p)
        seen = []
        # scapy fills sniffer.results only at stop(): collect as they arrive.
        sniffer = AsyncSniffer(iface=in_iface, lfilter=match, store=False, prn=seen.append)
        sniffer.start()
        time.sleep(0.3)                       # the capture socket must be open first
        sendp(list(frames), iface=out_iface)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(seen) < expect:
            time.sleep(0.05)
        time.sleep(0.1)                       # anything beyond the expected count
        sniffer.stop()
        return list(seen)

    def to_backends(self, frames, expect, match=None, timeout=10.0):
        return self.exchange(frames, self.frontend_if, self.backend_if, expect, match, timeout)

    def to_clients(self, frames, expect, match=None, timeout=10.0):
        return self.exchange(frames, self.backend_if, self.frontend_if, expect, match, timeout)

    def reload(self) -> str:
        """SIGHUP; returns rplb's log line about it."""
        self.rplb.signal(signal.SIGHUP)
        return self.rplb.wait_for_stderr("SIGHUP")

    def stop(self):
        rc, out = self.rplb.stop()
        return rc, out
