"""rplb on net_pcap ports with several queues, each fed live: the test puts
each frame on exactly the queue it chooses, when it chooses.

    test process                      root ns                      rplb
    AF_PACKET socket -> ri<p><q><pid> ==veth== rq<p><q><pid> -> net_pcap<p> rx queue q
                                                                 net_pcap<p> tx queue q -> file

Port p's rx queue q captures (rx_iface_in) the rplb end of veth pair
(p, q); the test sends into the other end.  What rplb sends on queue q
goes to a pcap file of its own, read while rplb runs (complete records
only).  Names carry the pid, like tests/netns.py's (.ci/run removes those
of dead test processes).

Pacing: net_pcap captures live with a snapshot length of 256 KiB, so
libpcap's ring holds only a few frames, and a burst sent while the worker
polling that queue is off its CPU (two CPUs, shared) overflows it: the
port counts them as missed.  So send() waits, every few frames, until
the queue's worker has received them (its rx counter, through the
control socket).
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Callable, List, Sequence

from harness import LiveRplb, eal_args, file_prefix
from netns import sh


def read_complete_pcap(path: Path) -> List[bytes]:
    """The frames of a pcap file another process is writing: every complete
    record (a record being written is left for the next read)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    frames, at = [], 24
    while at + 16 <= len(data):
        incl_len = struct.unpack_from("<I", data, at + 8)[0]
        if at + 16 + incl_len > len(data):
            break
        frames.append(data[at + 16:at + 16 + incl_len])
        at += 16 + incl_len
    return frames


class QueueWire:
    """ports x queues veth pairs; rplb reads port p's queue q from one."""

    def __init__(self, tmp: Path, ports: int = 2, queues: int = 2, tag: str = ""):
        self.tmp = tmp
        self.ports, self.queues = ports, queues
        tag = tag or str(os.getpid())
        self.rplb_end = {(p, q): f"rq{p}{q}{tag}" for p in range(ports) for q in range(queues)}
        self.test_end = {(p, q): f"ri{p}{q}{tag}" for p in range(ports) for q in range(queues)}
        self.sockets = {}
        self.rplb = None

    def create(self) -> None:
        self.destroy_links()
        for key, name in self.rplb_end.items():
            sh("ip", "link", "add", name, "type", "veth", "peer", "name", self.test_end[key])
            for dev in (name, self.test_end[key]):
                # Nothing of the kernel's own (router solicitations) on the wire.
                sh("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
                sh("ip", "link", "set", dev, "up")
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            sock.bind((self.test_end[key], 0))
            self.sockets[key] = sock

    def output(self, port: int, queue: int) -> Path:
        return self.tmp / f"out{port}{queue}.pcap"

    def vdevs(self) -> List[str]:
        return [f"net_pcap{p},"
                + ",".join(f"rx_iface_in={self.rplb_end[p, q]}" for q in range(self.queues))
                + "," + ",".join(f"tx_pcap={self.output(p, q)}" for q in range(self.queues))
                for p in range(self.ports)]

    def start_rplb(self, config: Path, lcores: str, *rplb_args: str) -> None:
        prefix = file_prefix()
        self.rplb = LiveRplb([*eal_args(prefix, self.vdevs(), lcores), "--",
                              "--config", str(config), "--stats-json", str(self.tmp / "stats.json"),
                              "--control-socket", str(self.tmp / "rplb.sock"), *rplb_args],
                             prefix, cwd=self.tmp)
        self.rplb.wait_for_stderr("forwarding with")

    def received(self, port: int, queue: int) -> int:
        """Frames the worker of queue has received from port (worker i polls
        queue i), and the frames the port missed."""
        from rplb.control.client import request
        reply = request(str(self.tmp / "rplb.sock"), {"cmd": "stats"})
        assert reply["ok"], reply
        stats = reply["stats"]
        return (stats["workers"][queue]["port"][port]["rx_packets"],
                stats["ports"][port]["ethdev"]["imissed"])

    def send(self, port: int, queue: int, frames: Sequence[bytes], batch: int = 4) -> None:
        """Frames into port's rx queue `queue`, in order, a few at a time,
        each batch received before the next is sent (see Pacing above)."""
        frames = list(frames)
        start, missed = self.received(port, queue)
        for first in range(0, len(frames), batch):
            for frame in frames[first:first + batch]:
                self.sockets[port, queue].send(bytes(frame))
            want = start + min(first + batch, len(frames))
            got, missed_now = wait_until(
                lambda: (lambda r: r if r[0] >= want or r[1] > missed else None)(
                    self.received(port, queue)),
                f"port {port} queue {queue} receiving {want - start} frames")
            assert missed_now == missed, f"port {port} missed {missed_now - missed} frames"

    def sent_by(self, port: int) -> List[List[bytes]]:
        """Everything port has sent so far, by tx queue."""
        return [read_complete_pcap(self.output(port, q)) for q in range(self.queues)]

    def sent_since(self, port: int, before: Sequence[int]) -> List[bytes]:
        """What port sent after it had sent before[q] frames on each queue q."""
        return [f for q, frames in enumerate(self.sent_by(port)) for f in frames[before[q]:]]

    def sent_counts(self, port: int) -> List[int]:
        return [len(frames) for frames in self.sent_by(port)]

    def destroy_links(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.sockets = {}
        for name in self.rplb_end.values():
            sh("ip", "link", "del", name, check=False)

    def destroy(self):
        rc = None
        if self.rplb is not None:
            rc, _ = self.rplb.stop()
        self.destroy_links()
        return rc


def wait_until(condition: Callable[[], object], what: str, timeout: float = 20.0):
    """condition()'s first true value; AssertionError naming what after
    timeout seconds (polls observable state: files, counters)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
