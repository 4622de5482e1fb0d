"""Run rplb-dpdk in its own process on net_pcap virtual ports.

EAL initialises once per process, so every test that needs DPDK starts the
real CLI as a subprocess: frames in through rx_pcap files, frames out
through tx_pcap files, final counters through --stats-json.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from scapy.utils import PcapReader, PcapWriter

RPLB = [sys.executable, "-m", "rplb"]
_counter = itertools.count()


def file_prefix() -> str:
    """A unique EAL --file-prefix (parallel tests and runs must not share one)."""
    return f"rplbtest{os.getpid()}_{next(_counter)}"


def remove_runtime_dir(prefix: str) -> None:
    # EAL never removes /var/run/dpdk/<prefix> (about 6.5 MB each).
    shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)


def write_pcap(path: Path, frames: Sequence) -> Path:
    """frames: scapy packets or bytes.  An empty list still gets a header."""
    writer = PcapWriter(str(path), linktype=1, sync=True)
    writer._write_header(None)
    for frame in frames:
        writer.write(bytes(frame))
    writer.close()
    return path


def read_pcap(path: Path) -> List[bytes]:
    if not path.exists() or path.stat().st_size < 24:
        return []
    with PcapReader(str(path)) as reader:
        return [bytes(p) for p in reader]


def eal_args(prefix: str, vdevs: Sequence[str], lcores: str = "0-1") -> List[str]:
    """lcores: an -l list (0-1), or an --lcores map (0@0,1@0,2@1: several
    lcores on one CPU)."""
    lcore_option = "--lcores" if "@" in lcores or "(" in lcores else "-l"
    return ["--no-huge", "-m", "512", "--no-pci", lcore_option, lcores, "--file-prefix", prefix,
            "--log-level=*:warning", *itertools.chain.from_iterable(("--vdev", v) for v in vdevs)]


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    frontend_out: List[bytes] = field(default_factory=list)   # left by port 0
    backend_out: List[bytes] = field(default_factory=list)    # left by port 1
    stats: Optional[dict] = None

    def counter(self, group: str, name: str) -> int:
        return self.stats[group][name]


def run_rplb(tmp_path: Path, frontend_in: Sequence = (), backend_in: Sequence = (),
             rplb_args: Sequence[str] = (), duration: float = 0.7, timeout: float = 60,
             extra_eal: Sequence[str] = ()) -> Run:
    """Feed frontend_in to port 0 and backend_in to port 1, run for duration
    seconds, and return what left each port."""
    tmp_path = Path(tmp_path)
    fin = write_pcap(tmp_path / "frontend_in.pcap", frontend_in)
    bin_ = write_pcap(tmp_path / "backend_in.pcap", backend_in)
    fout, bout = tmp_path / "frontend_out.pcap", tmp_path / "backend_out.pcap"
    stats = tmp_path / "stats.json"
    for p in (fout, bout, stats):
        p.unlink(missing_ok=True)
    prefix = file_prefix()
    argv = [*RPLB, *eal_args(prefix, [f"net_pcap0,rx_pcap={fin},tx_pcap={fout}",
                                      f"net_pcap1,rx_pcap={bin_},tx_pcap={bout}"]),
            *extra_eal, "--", "--duration", str(duration), "--stats-json", str(stats),
            "--control-socket", str(tmp_path / "rplb.sock"), *rplb_args]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              cwd=tmp_path)
    finally:
        remove_runtime_dir(prefix)
    run = Run(proc.returncode, proc.stdout, proc.stderr, read_pcap(fout), read_pcap(bout))
    if stats.exists():
        run.stats = json.loads(stats.read_text())
    return run


def run_cli(args: Sequence[str], timeout: float = 60, cwd=None) -> subprocess.CompletedProcess:
    """rplb-dpdk with exactly these arguments (for error cases)."""
    return subprocess.run([*RPLB, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd)


class LiveRplb:
    """rplb-dpdk running in the background (for signals mid-run).

    Two threads drain its stdout and stderr all the time: a pipe nobody
    reads fills up after 64 KiB and blocks the writer (rplb logs every
    control change)."""

    def __init__(self, argv: Sequence[str], prefix: str, cwd=None):
        self.prefix = prefix
        self.proc = subprocess.Popen([*RPLB, *argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=cwd)
        self.stderr_lines: List[str] = []
        self._stdout: List[str] = []
        self._cursor = 0                     # stderr lines already matched past
        self._arrived = threading.Condition()
        self._readers = [threading.Thread(target=self._drain, args=(self.proc.stderr, True),
                                          daemon=True),
                         threading.Thread(target=self._drain, args=(self.proc.stdout, False),
                                          daemon=True)]
        for reader in self._readers:
            reader.start()

    def _drain(self, stream, is_stderr: bool) -> None:
        for line in stream:
            with self._arrived:
                (self.stderr_lines if is_stderr else self._stdout).append(line.rstrip("\n"))
                self._arrived.notify_all()
        with self._arrived:
            self._arrived.notify_all()

    def wait_for_stderr(self, needle: str, timeout: float = 30) -> str:
        """The next stderr line (after the last one matched) containing needle."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for i in range(self._cursor, len(self.stderr_lines)):
                    if needle in self.stderr_lines[i]:
                        self._cursor = i + 1
                        return self.stderr_lines[i]
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None
                                 and not any(r.is_alive() for r in self._readers)):
                    raise AssertionError(f"{needle!r} not seen on stderr: {self.stderr_lines}")
                self._arrived.wait(min(left, 0.1))

    def signal(self, signo: int) -> None:
        self.proc.send_signal(signo)

    def stop(self, timeout: float = 30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=timeout)
            for reader in self._readers:
                reader.join(timeout)
        finally:
            remove_runtime_dir(self.prefix)
        return self.proc.returncode, "\n".join(self._stdout) + "\n"
