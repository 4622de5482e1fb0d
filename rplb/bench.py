"""rplb-bench: measure rplb next to DPDK's reference forwarder, rerunnably.

    rplb-bench                      the full run (several minutes)
    rplb-bench --quick --json       the smallest run (what CI runs)
    python -m rplb.bench --help

Throughput.  For each traffic case a capture of 64-byte TCP frames is
written (one frame per client 5-tuple, all to the VIP 10.0.0.100:80): 1,
1,000, 65,536 and 1,000,000 established flows (ACKs), and an all-new-flows
capture (every frame the SYN of a different client 5-tuple).  Three programs
forward it, each on the same virtual ports, lcores, mbuf count and burst size:

    port 0  net_pcap0,rx_pcap=CAPTURE,infinite_rx=1   the source (frontend)
    port 1  net_null0,no-rx=1                          the sink (backend)

    dpdk-testpmd --forward-mode=io       moves mbufs, reads nothing
    dpdk-testpmd --forward-mode=5tswap   swaps MACs, IPs and ports: a rewrite
    rplb-dpdk --config SERVICES          the load balancer (one TCP service,
                                         16 backends)

with EAL `--no-huge -m M --no-pci -l 0-1` (lcore 0: main, lcore 1: the one
forwarding lcore), testpmd `--total-num-mbufs=N` and rplb `--mbufs N` with the
same N (the pcap PMD keeps the whole capture in mbufs of that pool, so N is
the capture's frame count plus 16,384), and testpmd `--burst` set to rplb's
rx burst (RPLB_BURST, 64).  The programs run in turn, several
rounds (the order rotates every round), each until it has printed --seconds
measured samples; then SIGINT.

Samples: both programs print testpmd's port blocks every second
(`--stats-period 1`); a sample is port 1's `Tx-pps` (frames forwarded to the
sink per second over that period).  Warm-up: the first block is always
dropped (its period contains the start), and so is every block whose period
began before port 0 had received one full pass of the capture (the
cumulative `RX-packets` of port 0 in the previous block is below the
capture's frame count).  The capture replays the same flows, so after the
first pass every flow is in rplb's flow table: what is kept is the steady
state of established flows.  The figure of a run is the median of its
samples, the figure of a program the median of its runs.

All-new flows cannot have a steady state with a replayed capture (on the
second pass every flow exists), so rplb's all-new figure is measured during
the first pass: a capture of --new-flows SYNs of distinct 5-tuples, a flow
table twice that size, rplb with `--stats-period 0.02`, and only the blocks
whose whole period lies inside the first pass are kept (every frame of those
periods created a flow; the `flows_created` counter is checked).  testpmd has
no flow state: its figures on that capture are its usual steady state.

The source bounds the 1M-flow target (rplb at 1M flows against rplb at
1,000): net_pcap replays a million frames from a million cold mbufs, and io
alone slows down with them.  Next to that target the report prints rplb's
own work (its time minus io's) at both counts, and what this source allows
rplb by that model (scaling_ceiling): the ratio it would reach were its own
work no dearer with a million flows than with 1,000.

Also measured: Maglev table build time (rplb.maglev.build_table, 65,537
slots), memory per stored flow (the DPDK heap a flow table takes, per flow),
time from process start to the first forwarded frame, and the engine alone
(rplb-bench-engine: process_burst called directly, ns/packet, and
instructions/packet counted by valgrind's callgrind).

And the control plane (--only control): a running rplb-dpdk with 10,000
services, its full reloads, single edits and readers, through the control
socket, DPDK telemetry and Prometheus (rplb/bench_control.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

PROG = "rplb-bench"

VIP = "10.0.0.100"
# Stats period of rplb in the all-new case: its first pass over 1,000,000
# SYNs lasts a fraction of a second at several Mpps, and only blocks wholly
# inside it count.
FIRST_PASS_PERIOD = 0.02
VIP_PORT = 80
N_BACKENDS = 16
FRAME_LEN = 64
CLIENT_NET = (198 << 24) | (18 << 16)      # 198.18.0.0/15, RFC 2544's benchmark range
DEFAULT_FLOWS = (1, 1000, 65536, 1000000)
DEFAULT_NEW_FLOWS = 1000000
EXTRA_MBUFS = 16384
PROGRAMS = ("io", "5tswap", "rplb")
RPLB_DEFAULT_FLOW_TABLE = 1048576

# Targets of issue 4 (reported, never enforced).
TARGETS = {
    "rplb_1000_flows_vs_5tswap": 0.85,
    "rplb_1m_flows_vs_rplb_1000_flows": 0.70,
    "rplb_all_new_vs_5tswap": 0.50,
    "engine_ns_per_packet": 30.0,
    "engine_instructions_per_packet": 150.0,
    "maglev_build_ms_1000_backends": 5.0,
}


def log(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """One line for the operator, exit status 1."""


# ---- captures ----------------------------------------------------------------

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


# ---- stats blocks --------------------------------------------------------------

_BLOCK = re.compile(r"NIC statistics for port (\d+)")
_FIELDS = {
    "rx_packets": re.compile(r"RX-packets:\s*(\d+)"),
    "tx_packets": re.compile(r"TX-packets:\s*(\d+)"),
    "rx_pps": re.compile(r"Rx-pps:\s*(\d+)"),
    "tx_pps": re.compile(r"Tx-pps:\s*(\d+)"),
}


class StatsParser:
    """Feed lines of testpmd / rplb-dpdk output; collects one sample per
    stats period: {'t': time seen, 0: {port 0 fields}, 1: {port 1 fields}}."""

    def __init__(self, n_ports: int = 2):
        self.n_ports = n_ports
        self.blocks: List[dict] = []
        self.extra: List[str] = []          # other lines, e.g. rplb's counters
        self._current: Optional[dict] = None
        self._port: Optional[int] = None
        self._stopped = False

    def feed(self, line: str) -> None:
        if self._stopped:
            return
        if "final statistics" in line:      # rplb's exit block has no rates
            self._stopped = True
            return
        m = _BLOCK.search(line)
        if m:
            self._port = int(m.group(1))
            if self._current is None:
                self._current = {"t": time.monotonic()}
            self._current[self._port] = {}
            return
        if self._port is None:
            if line.strip().startswith("events:"):
                self.extra.append(line.strip())
            return
        fields = self._current[self._port]
        for name, rx in _FIELDS.items():
            for mm in rx.finditer(line):
                fields[name] = int(mm.group(1))
        if set(fields) >= set(_FIELDS) and line.strip().startswith("#"):
            # end of this port's block
            if self._port == self.n_ports - 1:
                self.blocks.append(self._current)
                self._current = None
            self._port = None


def steady_samples(blocks: List[dict], capture_frames: int) -> List[int]:
    """Port 1 Tx-pps of the blocks past warm-up (see the module docstring)."""
    out = []
    for prev, cur in zip(blocks, blocks[1:]):
        if prev[0]["rx_packets"] >= capture_frames:
            out.append(cur[1]["tx_pps"])
    return out


def first_pass_samples(blocks: List[dict], capture_frames: int) -> List[int]:
    """Port 1 Tx-pps of the blocks whose period lies inside the first pass."""
    out = []
    for prev, cur in zip(blocks, blocks[1:]):
        if prev[0]["rx_packets"] > 0 and cur[0]["rx_packets"] <= capture_frames:
            out.append(cur[1]["tx_pps"])
    return out


# ---- running one program -------------------------------------------------------

_prefix_counter = iter(range(1 << 30))


def file_prefix(tag: str) -> str:
    return f"rplbbench{os.getpid()}_{tag}_{next(_prefix_counter)}"


def remove_runtime_dir(prefix: str) -> None:
    shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)


def eal_args(prefix: str, capture: Path, memory_mb: int, hugepages: bool) -> List[str]:
    memory = ["-m", str(memory_mb)] if hugepages else ["--no-huge", "-m", str(memory_mb)]
    return [*memory, "--no-pci", "-l", "0-1",
            "--file-prefix", prefix, "--log-level=*:warning",
            "--vdev", f"net_pcap0,rx_pcap={capture},infinite_rx=1",
            "--vdev", "net_null0,no-rx=1"]


def rplb_burst() -> int:
    """rplb's rx burst (RPLB_BURST), which testpmd is given too: both
    programs read as many packets at once."""
    from rplb import contract
    return contract.BURST


def rplb_command() -> List[str]:
    return [sys.executable, "-m", "rplb"]


def program_argv(program: str, prefix: str, capture: Path, memory_mb: int, mbufs: int,
                 services: Optional[Path], stats_period: float,
                 hugepages: bool = False) -> List[str]:
    eal = eal_args(prefix, capture, memory_mb, hugepages)
    if program in ("io", "5tswap"):
        testpmd = shutil.which("dpdk-testpmd")
        if testpmd is None:
            raise BenchError("dpdk-testpmd not found (apt-get install dpdk)")
        cmd = [testpmd, *eal, "--", f"--total-num-mbufs={mbufs}", "--stats-period", "1",
               f"--forward-mode={program}", "--no-mlockall", f"--burst={rplb_burst()}"]
        # testpmd's stdout is a pipe: make it line-buffered to read samples live.
        stdbuf = shutil.which("stdbuf")
        return [stdbuf, "-oL", *cmd] if stdbuf else cmd
    return [*rplb_command(), *eal, "--", "--mbufs", str(mbufs), "--stats-period",
            f"{stats_period:g}", "--config", str(services)]


def run_program(program: str, capture: Path, capture_frames: int, memory_mb: int,
                mbufs: int, services: Optional[Path], samples_wanted: int,
                first_pass: bool = False, timeout: float = 180.0,
                hugepages: bool = False) -> dict:
    """Run one program until it printed enough kept samples; SIGINT it."""
    prefix = file_prefix(program)
    period = FIRST_PASS_PERIOD if (first_pass and program == "rplb") else 1.0
    argv = program_argv(program, prefix, capture, memory_mb, mbufs, services, period,
                        hugepages)
    parser = StatsParser()
    lines: List[str] = []
    started = time.monotonic()
    # cwd: away from a source checkout, whose rplb/ would shadow the install.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, errors="replace",
                            cwd=Path(capture).parent)
    err_chunks: List[str] = []
    err_thread = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()),
                                  daemon=True)
    err_thread.start()
    done = threading.Event()

    def enough() -> bool:
        if first_pass and program == "rplb":
            # stop once the first pass is over (plus one block)
            return any(b[0]["rx_packets"] > capture_frames for b in parser.blocks)
        return len(steady_samples(parser.blocks, capture_frames)) >= samples_wanted

    def reader():
        for line in proc.stdout:
            lines.append(line)
            parser.feed(line)
            if not done.is_set() and enough():
                done.set()
                proc.send_signal(signal.SIGINT)
        done.set()

    out_thread = threading.Thread(target=reader, daemon=True)
    out_thread.start()
    try:
        if not done.wait(timeout):
            proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        out_thread.join(10)
        err_thread.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        remove_runtime_dir(prefix)
    elapsed = time.monotonic() - started
    stderr = "".join(err_chunks)
    if first_pass and program == "rplb":
        samples = first_pass_samples(parser.blocks, capture_frames)
    else:
        samples = steady_samples(parser.blocks, capture_frames)[:samples_wanted]
    result = {"program": program, "rc": rc, "seconds": round(elapsed, 2),
              "samples_pps": samples, "blocks": len(parser.blocks),
              "mpps": round(statistics.median(samples) / 1e6, 3) if samples else None}
    if program == "rplb" and parser.extra:
        result["events"] = parser.extra[-1]
    if not samples:
        tail = "\n".join((stderr.strip().splitlines() or ["(no stderr)"])[-8:])
        raise BenchError(f"{program} gave no sample past warm-up (exit {rc}, "
                         f"{len(parser.blocks)} stats blocks); its stderr ends with:\n{tail}")
    return result


# ---- one throughput case ---------------------------------------------------------

def memory_for(frames: int, flow_table: int, hugepages: bool = False) -> int:
    """-m in MB: the mbuf pool (4 KB an mbuf without hugepages: a 2,304-byte
    mbuf may not cross a 4 KB page; 2.5 KB on 2 MB pages), the flow table
    (about 160 B a flow) and 512 MB for the rest."""
    per_mbuf_kb = 2.5 if hugepages else 4.1
    mb = (frames + EXTRA_MBUFS) * per_mbuf_kb / 1024 + flow_table * 160 / 2**20 + 512
    return max(1024, int(-(-mb // 256) * 256))


def hugepages_free_mb() -> Optional[int]:
    """Free hugepage memory in MB, or None where the kernel reports none."""
    info = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info[key] = value.split()
    except OSError:
        return None
    if "HugePages_Free" not in info or "Hugepagesize" not in info:
        return None
    return int(info["HugePages_Free"][0]) * int(info["Hugepagesize"][0]) // 1024


def check_hugepages(memory_mb: int) -> None:
    """--hugepages needs a hugetlbfs mount and memory_mb of free hugepages:
    say how to get them rather than let EAL fail in every run."""
    try:
        with open("/proc/mounts") as f:
            mounted = any(line.split()[2] == "hugetlbfs" for line in f if line.strip())
    except OSError:
        mounted = False
    free = hugepages_free_mb()
    how = (f"reserve and mount them first, e.g. (2 MB pages) "
           f"'echo {-(-memory_mb // 2) + 64} > /proc/sys/vm/nr_hugepages && "
           f"mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages'")
    if not mounted:
        raise BenchError(f"--hugepages: no hugetlbfs is mounted; {how}")
    if free is None or free < memory_mb:
        raise BenchError(f"--hugepages: this case needs {memory_mb} MB of hugepages, "
                         f"{free or 0} MB are free; {how}")


def pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


def run_case(workdir: Path, name: str, flows: int, syn: bool, rounds: int, seconds: int,
             first_pass: bool = False, hugepages: bool = False) -> dict:
    capture = workdir / f"{name}.pcap"
    t = time.monotonic()
    frames = write_capture(capture, flows, syn)
    gen_s = time.monotonic() - t
    flow_table = max(RPLB_DEFAULT_FLOW_TABLE, pow2_at_least(2 * flows))
    services = workdir / f"{name}.yaml"
    services_yaml(services, flow_table)
    mbufs = frames + EXTRA_MBUFS
    memory_mb = memory_for(frames, flow_table, hugepages)
    if hugepages:
        check_hugepages(memory_mb)
    case = {"case": name, "flows": flows, "kind": "all-new (SYN)" if syn else "established",
            "capture_frames": frames, "capture_seconds": round(gen_s, 2),
            "flow_table_size": flow_table, "mbufs": mbufs, "memory_mb": memory_mb,
            "warm_up": ("rplb: periods inside the first pass (every frame a new flow), "
                        "testpmd: steady state" if first_pass else
                        "first block and blocks before one full pass of the capture dropped"),
            "runs": {p: [] for p in PROGRAMS}}
    for r in range(rounds):
        order = PROGRAMS[r % 3:] + PROGRAMS[:r % 3]
        for program in order:
            log(f"{name}: round {r + 1}/{rounds}: {program}")
            res = run_program(program, capture, frames, memory_mb, mbufs, services, seconds,
                              first_pass=first_pass, hugepages=hugepages)
            log(f"{name}: {program}: {res['mpps']} Mpps "
                f"({len(res['samples_pps'])} samples, {res['seconds']} s)")
            case["runs"][program].append(res)
    case["mpps"] = {p: round(statistics.median(r["mpps"] for r in case["runs"][p]), 3)
                    for p in PROGRAMS}
    m = case["mpps"]
    case["rplb_vs_5tswap"] = round(m["rplb"] / m["5tswap"], 3) if m["5tswap"] else None
    case["rplb_vs_io"] = round(m["rplb"] / m["io"], 3) if m["io"] else None
    capture.unlink(missing_ok=True)
    return case


# ---- the other measurements -----------------------------------------------------------

def maglev_build_ms(backend_counts=(10, 100, 1000), size: int = 65537,
                    repeat: int = 5) -> Dict[str, dict]:
    from rplb.maglev import build_table

    out = {}
    for n in backend_counts:
        ips = [(192 << 24) | (168 << 16) | ((1 + i // 250) << 8) | (1 + i % 250)
               for i in range(n)]
        ports, weights = [8080] * n, [1] * n
        build_table(ips, ports, weights, size)          # warm (imports, caches)
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            build_table(ips, ports, weights, size)
            times.append((time.perf_counter() - t) * 1e3)
        out[str(n)] = {"median_ms": round(statistics.median(times), 3),
                       "min_ms": round(min(times), 3), "repeat": repeat}
    return out


def find_engine_binary() -> Optional[Path]:
    """rplb-bench-engine: $RPLB_BENCH_ENGINE, next to this module (an
    installed wheel), or in a meson build directory of the source tree."""
    env = os.environ.get("RPLB_BENCH_ENGINE")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    candidates = [here / "rplb-bench-engine"]
    for build in sorted((here.parent / "build").glob("*/benchmarks/rplb-bench-engine")):
        candidates.append(build)
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    return None


def tx_instructions(callgrind_out: Path) -> Optional[int]:
    """Instructions spent inside the sink PMD (net_null's tx burst, which
    also frees the mbufs): the I/O part of the engine benchmark.  The
    outermost net_null function has the largest inclusive count."""
    if shutil.which("callgrind_annotate") is None:
        return None
    proc = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100",
                           str(callgrind_out)], capture_output=True, text=True)
    costs = [int(m.group(1).replace(",", ""))
             for m in re.finditer(r"^\s*([\d,]+)\s.*librte_net_null", proc.stdout, re.M)]
    return max(costs) if costs else None


def run_engine(binary: Path, args: Sequence[str], valgrind: bool = False,
               timeout: float = 600) -> dict:
    cmd = [str(binary), *args]
    cg_out = None
    if valgrind:
        fd, cg_out = tempfile.mkstemp(prefix="rplb-bench-callgrind.")
        os.close(fd)
        cmd = ["valgrind", "--tool=callgrind", "--toggle-collect=measured_burst",
               f"--callgrind-out-file={cg_out}", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    try:
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("{")), None)
        if proc.returncode != 0 or line is None:
            tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
            raise BenchError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{tail}")
        result = json.loads(line)
        if valgrind:
            m = re.search(r"Collected\s*:\s*(\d+)", proc.stderr)
            if m is None:
                raise BenchError("callgrind printed no instruction count")
            result["instructions"] = int(m.group(1))
            result["instructions_per_packet"] = round(int(m.group(1)) / result["packets"], 1)
            tx = tx_instructions(Path(cg_out))
            if tx is not None:
                result["tx_instructions_per_packet"] = round(tx / result["packets"], 1)
                result["instructions_per_packet_no_io"] = round(
                    (int(m.group(1)) - tx) / result["packets"], 1)
        return result
    finally:
        if cg_out:
            Path(cg_out).unlink(missing_ok=True)


def engine_report(quick: bool, callgrind: bool) -> dict:
    binary = find_engine_binary()
    if binary is None:
        return {"error": "rplb-bench-engine not found (build rplb, or set RPLB_BENCH_ENGINE)"}
    bursts = "100000" if quick else "1000000"
    cases = {"established": ["--mode", "established", "--flows", "1000"],
             "new": ["--mode", "new"],
             "fwd": ["--mode", "fwd"]}
    out: dict = {"binary": str(binary)}
    for name, args in cases.items():
        runs = [run_engine(binary, [*args, "--bursts", bursts]) for _ in range(1 if quick else 3)]
        best = sorted(runs, key=lambda r: r["ns_per_packet"])[len(runs) // 2]
        out[name] = {"ns_per_packet": best["ns_per_packet"],
                     "ns_per_packet_min": min(r["ns_per_packet_min"] for r in runs),
                     "ns_per_packet_mean": best["ns_per_packet_mean"],
                     "packets": best["packets"], "flow_table_size": best["flow_table_size"],
                     "runs_ns": [r["ns_per_packet"] for r in runs]}
    if callgrind and shutil.which("valgrind"):
        for name, args in cases.items():
            cg = run_engine(binary, [*args, "--bursts", "2000"], valgrind=True)
            for key in ("instructions_per_packet", "instructions_per_packet_no_io",
                        "tx_instructions_per_packet"):
                if key in cg:
                    out[name][key] = cg[key]
    elif callgrind:
        out["callgrind"] = "valgrind not found (apt-get install valgrind)"
    else:
        out["callgrind"] = "skipped (--quick; run without --quick, or with --callgrind)"
    for name in ("established", "new"):
        if "fwd" in out and name in out:
            out[name]["ns_per_packet_minus_fwd"] = round(
                out[name]["ns_per_packet"] - out["fwd"]["ns_per_packet"], 2)
            if "instructions_per_packet" in out[name]:
                out[name]["instructions_per_packet_minus_fwd"] = round(
                    out[name]["instructions_per_packet"] - out["fwd"]["instructions_per_packet"], 1)
    mem = run_engine(binary, ["--mode", "memory", "--flow-table", "1048576"])
    out["memory"] = mem
    return out


def time_to_first_packet(workdir: Path, repeat: int = 1) -> dict:
    """From process start (Popen) to the first frame in the tx pcap of port 1."""
    capture = workdir / "first.pcap"
    write_capture(capture, 64, syn=True)
    services = workdir / "first.yaml"
    services_yaml(services, 65536)
    results = []
    for _ in range(repeat):
        out = workdir / "first-out.pcap"
        out.unlink(missing_ok=True)
        prefix = file_prefix("first")
        argv = [*rplb_command(), "--no-huge", "-m", "1024", "--no-pci", "-l", "0-1",
                "--file-prefix", prefix, "--log-level=*:warning",
                "--vdev", f"net_pcap0,rx_pcap={capture}",
                "--vdev", f"net_pcap1,tx_pcap={out}",
                "--", "--config", str(services), "--duration", "30"]
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, cwd=Path(out).parent)
        first = logged = None
        err_lines: List[str] = []

        def read_err():
            nonlocal logged
            for line in proc.stderr:
                err_lines.append(line)
                if logged is None and "forwarding with" in line:
                    logged = time.monotonic() - t0
        th = threading.Thread(target=read_err, daemon=True)
        th.start()
        try:
            while time.monotonic() - t0 < 30 and proc.poll() is None:
                # pcap header (24 B) + one record header (16 B) + a frame
                if out.exists() and out.stat().st_size >= 24 + 16 + FRAME_LEN:
                    first = time.monotonic() - t0
                    break
                time.sleep(0.0005)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            th.join(5)
            remove_runtime_dir(prefix)
        if first is None:
            raise BenchError("time to first packet: no frame left port 1:\n"
                             + "".join(err_lines[-6:]))
        results.append({"first_frame_ms": round(first * 1e3, 1),
                        "ready_log_line_ms": round(logged * 1e3, 1) if logged else None})
    best = sorted(results, key=lambda r: r["first_frame_ms"])[len(results) // 2]
    return {**best, "runs": results,
            "how": "from Popen of rplb-dpdk (python -m rplb, with the services file) "
                   "to the first frame in port 1's tx pcap"}


def machine_info(hugepages: bool = False) -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    dpdk = None
    try:
        dpdk = subprocess.run(["pkg-config", "--modversion", "libdpdk"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"cpu": cpu, "cpus": os.cpu_count(), "memory_gb": mem_gb, "load_average": load,
            "kernel": platform.release(), "dpdk": dpdk,
            "python": platform.python_version(), "hugepages": hugepages}


# ---- targets and output -----------------------------------------------------------------

def scaling_ceiling(small: dict, large: dict) -> Optional[dict]:
    """What the source allows rplb's large/small-flows figure to reach.

    The capture is replayed by net_pcap from mbufs of its own: with many
    flows those are cold, and the source alone slows down (io's own
    large/small figure).  Model a run's time per packet as the source's and
    sink's (io's time) plus rplb's own work (rplb's time minus io's, at the
    small flow count).  Were rplb's own work no dearer with a large table
    (a warm table: the best it can do), its large/small figure would be

        t_rplb_small / (t_io_large + t_rplb_small - t_io_small)

    which is below 1 and falls as rplb's own work shrinks: a faster rplb
    lowers its own ceiling.  It is a model, not a bound: runs are noisy,
    and a measured figure may land a little above it.  Also returned:
    rplb's own work at the large count, by the same model (what its flow
    table costs in DRAM shows there).  None without the figures."""
    try:
        io_s, io_l = small["mpps"]["io"], large["mpps"]["io"]
        rplb_s, rplb_l = small["mpps"]["rplb"], large["mpps"]["rplb"]
        t_io_s, t_io_l, t_rplb_s, t_rplb_l = 1 / io_s, 1 / io_l, 1 / rplb_s, 1 / rplb_l
    except (KeyError, TypeError, ZeroDivisionError):
        return None
    own = t_rplb_s - t_io_s
    return {"io_large_vs_small": round(io_l / io_s, 3),
            "rplb_own_ns_per_packet": round(own * 1000, 1),
            "rplb_own_ns_per_packet_large": round((t_rplb_l - t_io_l) * 1000, 1),
            "ceiling": round(t_rplb_s / (t_io_l + own), 3)}


def evaluate_targets(result: dict) -> List[dict]:
    cases = {c["case"]: c for c in result.get("throughput", [])}
    checks = []

    def add(name, value, target, higher_is_better, **extra):
        if value is None:
            return
        met = value >= target if higher_is_better else value <= target
        checks.append({"target": name, "value": round(value, 3),
                       "goal": (">= " if higher_is_better else "<= ") + str(target),
                       "met": bool(met), **extra})

    if "1000 flows" in cases:
        add("rplb_1000_flows_vs_5tswap", cases["1000 flows"]["rplb_vs_5tswap"],
            TARGETS["rplb_1000_flows_vs_5tswap"], True)
    if "1000000 flows" in cases and "1000 flows" in cases:
        base = cases["1000 flows"]["mpps"]["rplb"]
        ceiling = scaling_ceiling(cases["1000 flows"], cases["1000000 flows"])
        add("rplb_1m_flows_vs_rplb_1000_flows",
            cases["1000000 flows"]["mpps"]["rplb"] / base if base else None,
            TARGETS["rplb_1m_flows_vs_rplb_1000_flows"], True,
            **({"source_bound": ceiling} if ceiling else {}))
    if "all new" in cases:
        add("rplb_all_new_vs_5tswap", cases["all new"]["rplb_vs_5tswap"],
            TARGETS["rplb_all_new_vs_5tswap"], True)
    eng = result.get("engine", {}).get("established", {})
    # "The engine's cost alone ... without I/O": the sink PMD's tx burst
    # (and the mbuf frees in it) is taken out; for time, by subtracting the
    # pass-through engine, which is little more than that tx.
    add("engine_ns_per_packet", eng.get("ns_per_packet_minus_fwd"),
        TARGETS["engine_ns_per_packet"], False)
    add("engine_instructions_per_packet", eng.get("instructions_per_packet_no_io"),
        TARGETS["engine_instructions_per_packet"], False)
    mg = result.get("maglev_build", {}).get("1000")
    if mg:
        add("maglev_build_ms_1000_backends", mg["median_ms"],
            TARGETS["maglev_build_ms_1000_backends"], False)
    return checks


def format_table(result: dict) -> str:
    lines = []
    m = result["machine"]
    lines.append(f"machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory_gb']} GiB, "
                 f"kernel {m['kernel']}, DPDK {m['dpdk']}, "
                 f"{'hugepages (throughput cases)' if m.get('hugepages') else 'no hugepages'}, "
                 f"load average at start {m.get('load_average')}")
    cfg = result["config"]
    lines.append(f"rounds {cfg['rounds']}, {cfg['seconds']} samples of 1 s per run, "
                 "lcores 0-1 (one forwarding lcore), 64-byte TCP, "
                 "net_pcap (infinite_rx) -> net_null")
    lines.append("")
    head = (f"{'traffic':<22}{'io Mpps':>9}{'5tswap':>9}{'rplb':>9}"
            f"{'rplb/5tswap':>13}{'rplb/io':>9}")
    lines.append(head)
    lines.append("-" * len(head))
    for c in result.get("throughput", []):
        mm = c["mpps"]
        label = c["case"] if c["kind"] == "established" else f"{c['case']} (SYN)"
        lines.append(f"{label:<22}{mm['io']:>9.2f}{mm['5tswap']:>9.2f}{mm['rplb']:>9.2f}"
                     f"{c['rplb_vs_5tswap']:>13.2f}{c['rplb_vs_io']:>9.2f}")
    lines.append("")
    mg = result.get("maglev_build")
    if mg:
        lines.append("Maglev build, 65,537 slots: " + ", ".join(
            f"{n} backends {v['median_ms']:.1f} ms" for n, v in mg.items()))
    eng = result.get("engine", {})
    mem = eng.get("memory")
    if mem:
        lines.append(f"memory per stored flow: {mem['bytes_per_flow_allocated']:.0f} B "
                     f"(DPDK heap of a {mem['flow_table_size']:,}-flow table; "
                     f"rplb_lb_flow_memory() says {mem['bytes_per_flow_model']} B)")
    fp = result.get("first_packet")
    if fp:
        lines.append(f"start to first forwarded frame: {fp['first_frame_ms']:.0f} ms"
                     + (f" (ready log line at {fp['ready_log_line_ms']:.0f} ms)"
                        if fp.get("ready_log_line_ms") else ""))
    if "error" in eng:
        lines.append(f"engine alone: {eng['error']}")
    elif eng:
        for name, label in (("established", "1,000 established flows"),
                            ("new", "new flows (SYN)"), ("fwd", "pass-through engine")):
            e = eng.get(name)
            if not e:
                continue
            ins = e.get("instructions_per_packet")
            no_io = e.get("instructions_per_packet_no_io")
            lines.append(f"engine alone, {label}: {e['ns_per_packet']:.1f} ns/packet "
                         f"(fastest chunk {e['ns_per_packet_min']:.1f})"
                         + (f", {ins:.0f} instructions/packet" if ins is not None else "")
                         + (f" ({no_io:.0f} without the tx burst to net_null)"
                            if no_io is not None and name != "fwd" else ""))
        est = eng.get("established", {})
        if "ns_per_packet_minus_fwd" in est:
            lines.append("engine alone minus the pass-through engine (tx to net_null, mbuf "
                         f"frees): {est['ns_per_packet_minus_fwd']:.1f} ns/packet"
                         + (f", {est['instructions_per_packet_minus_fwd']:.0f} "
                            "instructions/packet"
                            if "instructions_per_packet_minus_fwd" in est else ""))
    control = result.get("control_plane")
    if control:
        from rplb.bench_control import format_report
        lines.append("")
        lines.extend(format_report(control))
    if control and control.get("targets"):
        lines.append("")
        lines.append("targets of issue 16 (control plane):")
        for t in control["targets"]:
            lines.append(f"  {t['target']:<42} {t['value']:>10} (goal {t['goal']}): "
                         f"{'met' if t['met'] else 'NOT met'}")
    if result.get("targets"):
        lines.append("")
        lines.append("targets of issue 4:")
        for t in result["targets"]:
            lines.append(f"  {t['target']:<36} {t['value']:>10} (goal {t['goal']}): "
                         f"{'met' if t['met'] else 'NOT met'}")
            bound = t.get("source_bound")
            if bound:
                lines.append(
                    f"    the source: io alone runs {bound['io_large_vs_small']} x its own "
                    "1,000-flow figure.  rplb's own work (its time minus io's): "
                    f"{bound['rplb_own_ns_per_packet']} ns/packet at 1,000 flows, "
                    f"{bound['rplb_own_ns_per_packet_large']} at 1M.")
                lines.append(
                    "    Were it no dearer at 1M, this source would allow rplb about "
                    f"{bound['ceiling']} (rplb/bench.py, scaling_ceiling)")
    return "\n".join(lines)


# ---- command line ------------------------------------------------------------------

def _flow_list(text: str) -> List[int]:
    try:
        values = [int(x.replace("_", "")) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of "
                                         "flow counts, e.g. 1,1000,65536") from None
    if not values or any(v <= 0 or v > 16_000_000 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: flow counts are 1..16000000")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Benchmark rplb next to dpdk-testpmd (io, 5tswap) on the "
        "same virtual ports, lcores, mbuf count and burst size, plus Maglev build time, "
        "memory per flow, start-up time and the engine alone.",
        epilog="Runs one benchmark process at a time; needs dpdk-testpmd, and valgrind "
        "for instruction counts.  See docs/performance.md.")
    p.add_argument("--rounds", type=_positive_int, default=3,
                   help="rounds of io, 5tswap, rplb per traffic case (default 3)")
    p.add_argument("--seconds", type=_positive_int, default=5,
                   help="measured 1-s samples per run, after warm-up (default 5)")
    p.add_argument("--flows", type=_flow_list, default=list(DEFAULT_FLOWS),
                   help="established flow counts (default 1,1000,65536,1000000)")
    p.add_argument("--new-flows", type=_positive_int, default=DEFAULT_NEW_FLOWS,
                   help="SYNs in the all-new-flows capture (default 1000000)")
    p.add_argument("--no-new", action="store_true", help="skip the all-new-flows case")
    p.add_argument("--quick", action="store_true",
                   help="smallest run: 1,000 flows, 1 round, 2 s, no all-new case, "
                   "no callgrind (what CI runs)")
    p.add_argument("--callgrind", action=argparse.BooleanOptionalAction, default=None,
                   help="count engine instructions with valgrind (default: on, off "
                   "with --quick)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--workdir", metavar="DIR",
                   help="where captures go (default: a temporary directory, removed)")
    p.add_argument("--only", choices=["throughput", "other", "control"],
                   help="only the throughput cases, only the other measurements (Maglev, "
                   "memory, start-up, the engine alone), or only the control plane")
    p.add_argument("--services", type=_positive_int, default=None, metavar="N",
                   help="services of the control-plane case (default 10000, 500 with "
                   "--quick), 10 backends each")
    p.add_argument("--hugepages", action="store_true",
                   help="run the throughput cases on hugepages (EAL without --no-huge; "
                   "needs a hugetlbfs mount and enough free pages, about 5 GB for the "
                   "million-frame captures), as an appliance runs; default: --no-huge")
    return p


def run(args: argparse.Namespace) -> dict:
    if args.quick:
        args.flows, args.rounds, args.seconds, args.no_new = [1000], 1, 2, True
    callgrind = (not args.quick) if args.callgrind is None else args.callgrind
    result: dict = {"machine": machine_info(args.hugepages),
                    "config": {"rounds": args.rounds, "seconds": args.seconds,
                               "flows": args.flows, "new_flows": None if args.no_new
                               else args.new_flows, "quick": args.quick,
                               "lcores": "0-1", "frame_bytes": FRAME_LEN,
                               "backends": N_BACKENDS,
                               "source": "net_pcap0,rx_pcap=CAPTURE,infinite_rx=1",
                               "sink": "net_null0,no-rx=1"},
                    "command": " ".join([PROG, *sys.argv[1:]])}
    tmp = None
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="rplb-bench.")
        workdir = Path(tmp.name)
    try:
        if args.only in (None, "throughput"):
            result["throughput"] = []
            for flows in args.flows:
                result["throughput"].append(
                    run_case(workdir, f"{flows} flows", flows, False, args.rounds,
                             args.seconds, hugepages=args.hugepages))
            if not args.no_new:
                result["throughput"].append(
                    run_case(workdir, "all new", args.new_flows, True, args.rounds,
                             args.seconds, first_pass=True, hugepages=args.hugepages))
        if args.only in (None, "control"):
            result["control_plane"] = control_plane(workdir, args)
        if args.only in (None, "other"):
            log("Maglev build times")
            result["maglev_build"] = maglev_build_ms(repeat=1 if args.quick else 5)
            log("time to first forwarded packet")
            result["first_packet"] = time_to_first_packet(workdir,
                                                          repeat=1 if args.quick else 3)
            log("engine alone" + (" (with callgrind)" if callgrind else ""))
            result["engine"] = engine_report(args.quick, callgrind)
    finally:
        if tmp is not None:
            tmp.cleanup()
    result["targets"] = evaluate_targets(result)
    return result


def control_plane(workdir: Path, args: argparse.Namespace) -> dict:
    from rplb.bench_control import control_plane_report
    quick = args.quick
    services = args.services or (500 if quick else 10000)
    prefix = file_prefix("control")
    cpdir = workdir / "control"
    cpdir.mkdir(exist_ok=True)
    try:
        return control_plane_report(cpdir, rplb_command(), prefix, services=services,
                                    backends=10, edits=10 if quick else 50,
                                    reloads=1 if quick else 3, log=log)
    finally:
        remove_runtime_dir(prefix)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except BenchError as err:
        log(f"error: {err}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
