"""dpdk-testpmd (io, 5tswap) and rplb-dpdk side by side: their command
lines on the same virtual ports, lcores, mbufs and bursts, their
testpmd-style statistics parsed into samples, the rounds of a throughput
case (one direction: a capture to a net_null sink; or both directions,
IPv4 or IPv6: the clients' frames on port 0, the backend's replies on
port 1), and rplb's time from start to its first forwarded frame."""

from __future__ import annotations

import re
import shutil
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from rplb.bench.common import BenchError, file_prefix, log, remove_runtime_dir, rplb_burst, \
    rplb_command
from rplb.bench.traffic import FRAME_LEN, both_directions_frames, services6_yaml, \
    services_yaml, write_capture, write_frames

# Stats period of rplb in the all-new case: its first pass over 1,000,000
# SYNs lasts a fraction of a second at several Mpps, and only blocks wholly
# inside it count.
FIRST_PASS_PERIOD = 0.02
EXTRA_MBUFS = 16384
PROGRAMS = ("io", "5tswap", "rplb")
RPLB_DEFAULT_FLOW_TABLE = 1048576
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
            if line.strip().startswith(("events:", "drops:")):
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


def both_ports_samples(blocks: List[dict], frames: List[int]) -> List[int]:
    """Frames sent per second by both ports together, of the blocks whose
    period began after both ports received one full pass of their captures."""
    out = []
    for prev, cur in zip(blocks, blocks[1:]):
        if all(prev[p]["rx_packets"] >= frames[p] for p in (0, 1)):
            out.append(cur[0]["tx_pps"] + cur[1]["tx_pps"])
    return out


def eal_args(prefix: str, capture: Path, memory_mb: int, hugepages: bool,
             replies: Optional[Path] = None) -> List[str]:
    """Port 0 replays the capture; port 1 is the sink (net_null), or with
    replies, replays them (both directions; what either port sends is
    dropped: net_pcap without a tx_pcap drops it)."""
    memory = ["-m", str(memory_mb)] if hugepages else ["--no-huge", "-m", str(memory_mb)]
    port1 = (f"net_pcap1,rx_pcap={replies},infinite_rx=1" if replies is not None
             else "net_null0,no-rx=1")
    return [*memory, "--no-pci", "-l", "0-1",
            "--file-prefix", prefix, "--log-level=*:warning",
            "--vdev", f"net_pcap0,rx_pcap={capture},infinite_rx=1",
            "--vdev", port1]


def program_argv(program: str, prefix: str, capture: Path, memory_mb: int, mbufs: int,
                 services: Optional[Path], stats_period: float,
                 hugepages: bool = False, replies: Optional[Path] = None) -> List[str]:
    eal = eal_args(prefix, capture, memory_mb, hugepages, replies)
    if program in ("io", "5tswap"):
        testpmd = shutil.which("dpdk-testpmd")
        if testpmd is None:
            raise BenchError("dpdk-testpmd not found (apt-get install dpdk)")
        cmd = [testpmd, *eal, "--", f"--total-num-mbufs={mbufs}", "--stats-period", "1",
               f"--forward-mode={program}", "--no-mlockall", f"--burst={rplb_burst()}"]
        # testpmd's stdout is a pipe: make it line-buffered to read samples live.
        stdbuf = shutil.which("stdbuf")
        return [stdbuf, "-oL", *cmd] if stdbuf else cmd
    # No control socket: the default one belongs to the appliance (or
    # another benchmark) that may run on this machine, and rplb refuses to
    # start beside it.
    return [*rplb_command(), *eal, "--", "--mbufs", str(mbufs), "--stats-period",
            f"{stats_period:g}", "--config", str(services), "--control-socket", "none"]


def run_until(argv: List[str], program: str, prefix: str, cwd: Path,
              enough: Callable[[StatsParser], bool], timeout: float = 180.0):
    """Run a testpmd-style program until enough(parser) says its printed
    statistics suffice (or timeout), then SIGINT it.  Returns (exit
    status, parser, stderr, seconds)."""
    parser = StatsParser()
    started = time.monotonic()
    # cwd: away from a source checkout, whose rplb/ would shadow the install.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, errors="replace", cwd=cwd)
    err_chunks: List[str] = []
    err_thread = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()),
                                  daemon=True)
    err_thread.start()
    done = threading.Event()

    def reader():
        for line in proc.stdout:
            parser.feed(line)
            if not done.is_set() and enough(parser):
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
    return rc, parser, "".join(err_chunks), time.monotonic() - started


def no_sample_error(program: str, rc: int, parser: StatsParser, stderr: str) -> BenchError:
    tail = "\n".join((stderr.strip().splitlines() or ["(no stderr)"])[-8:])
    return BenchError(f"{program} gave no sample past warm-up (exit {rc}, "
                      f"{len(parser.blocks)} stats blocks); its stderr ends with:\n{tail}")


def run_program(program: str, capture: Path, capture_frames: int, memory_mb: int,
                mbufs: int, services: Optional[Path], samples_wanted: int,
                first_pass: bool = False, timeout: float = 180.0,
                hugepages: bool = False, replies: Optional[Path] = None) -> dict:
    """Run one program until it printed enough kept samples; SIGINT it.
    With replies (a capture of as many frames as capture's, replayed by
    port 1), a sample is both ports' Tx-pps together."""
    prefix = file_prefix(program)
    period = FIRST_PASS_PERIOD if (first_pass and program == "rplb") else 1.0
    argv = program_argv(program, prefix, capture, memory_mb, mbufs, services, period,
                        hugepages, replies)
    def steady(blocks: List[dict], frames: int) -> List[int]:
        if replies is not None:
            return both_ports_samples(blocks, [frames, frames])
        return steady_samples(blocks, frames)

    def enough(parser: StatsParser) -> bool:
        if first_pass and program == "rplb":
            # stop once the first pass is over (plus one block)
            return any(b[0]["rx_packets"] > capture_frames for b in parser.blocks)
        return len(steady(parser.blocks, capture_frames)) >= samples_wanted

    rc, parser, stderr, elapsed = run_until(argv, program, prefix, Path(capture).parent, enough,
                                            timeout)
    if first_pass and program == "rplb":
        samples = first_pass_samples(parser.blocks, capture_frames)
    else:
        samples = steady(parser.blocks, capture_frames)[:samples_wanted]
    result = {"program": program, "rc": rc, "seconds": round(elapsed, 2),
              "samples_pps": samples, "blocks": len(parser.blocks),
              "mpps": round(statistics.median(samples) / 1e6, 3) if samples else None}
    for kind in ("events", "drops"):
        lines = [line for line in parser.extra if line.startswith(kind + ":")]
        if program == "rplb" and lines:
            result[kind] = lines[-1]
    if not samples:
        raise no_sample_error(program, rc, parser, stderr)
    return result


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
    run_rounds(case, rounds, lambda program: run_program(
        program, capture, frames, memory_mb, mbufs, services, seconds,
        first_pass=first_pass, hugepages=hugepages))
    capture.unlink(missing_ok=True)
    return case


def run_rounds(case: dict, rounds: int, run: Callable[[str], dict]) -> None:
    """Every program of PROGRAMS in turn, rounds times (the order rotates
    every round); the case's medians of medians and its ratios."""
    for r in range(rounds):
        order = PROGRAMS[r % 3:] + PROGRAMS[:r % 3]
        for program in order:
            run_logged(case, r, rounds, program, run)
    summarize(case)


def run_logged(case: dict, r: int, rounds: int, program: str,
               run: Callable[[str], dict]) -> None:
    name = case["case"]
    log(f"{name}: round {r + 1}/{rounds}: {program}")
    res = run(program)
    log(f"{name}: {program}: {res['mpps']} Mpps "
        f"({len(res['samples_pps'])} samples, {res['seconds']} s)")
    case["runs"][program].append(res)


def summarize(case: dict) -> None:
    case["mpps"] = {p: round(statistics.median(r["mpps"] for r in case["runs"][p]), 3)
                    for p in PROGRAMS}
    m = case["mpps"]
    case["rplb_vs_5tswap"] = round(m["rplb"] / m["5tswap"], 3) if m["5tswap"] else None
    case["rplb_vs_io"] = round(m["rplb"] / m["io"], 3) if m["io"] else None
    # The same ratio round by round (each round runs every program back to
    # back): this machine has phases in which everything runs at about half
    # speed, longer than a run but not than a round.
    runs = case["runs"]
    case["rplb_vs_5tswap_by_round"] = [
        round(r["mpps"] / t["mpps"], 3) if t["mpps"] else None
        for r, t in zip(runs["rplb"], runs["5tswap"])]


def both_directions_case_name(family: int, flows: int) -> str:
    return f"IPv{family} {flows} flows, both directions"


def run_both_directions_cases(workdir: Path, families: Sequence[int], flows: int,
                              rounds: int, seconds: int, hugepages: bool = False) -> List[dict]:
    """Established flows in both directions (issue 19), for each family
    (4: 64-byte IPv4 frames; 6: 74-byte IPv6 frames, the smallest IPv6 TCP
    frame): port 0 replays the clients' ACKs to the VIP, port 1 the
    backend's replies to them (one frame per flow each, one backend), both
    net_pcap with infinite_rx, what they send dropped; a sample is both
    ports' Tx-pps together, after one full pass of both captures.  io,
    5tswap and rplb on the same vdevs, lcores, mbufs and burst.  The cases
    are interleaved: every round runs every program of every family back
    to back (program order rotating, family order alternating), so a
    half-speed phase of the shared machine falls on both families alike."""
    cases, runners = [], []
    for family in families:
        case, run = _prepare_both_directions(workdir, family, flows, seconds, hugepages)
        cases.append(case)
        runners.append(run)
    for r in range(rounds):
        for program in PROGRAMS[r % 3:] + PROGRAMS[:r % 3]:
            pairs = list(zip(cases, runners))
            for case, run in (pairs if r % 2 == 0 else pairs[::-1]):
                run_logged(case, r, rounds, program, run)
    for case in cases:
        summarize(case)
        for path in case.pop("_files"):
            path.unlink(missing_ok=True)
    return cases


def _prepare_both_directions(workdir: Path, family: int, flows: int, seconds: int,
                             hugepages: bool):
    name = both_directions_case_name(family, flows)
    stem = f"v{family}-{flows}-both"
    t = time.monotonic()
    clients, replies = both_directions_frames(flows, family)
    capture, reply_capture = workdir / f"{stem}-clients.pcap", workdir / f"{stem}-replies.pcap"
    write_frames(capture, clients)
    write_frames(reply_capture, replies)
    gen_s = time.monotonic() - t
    # rplb's table holds a quarter of flow_table_size IPv6 flows.
    flow_table = max(RPLB_DEFAULT_FLOW_TABLE, pow2_at_least(8 * flows))
    services = workdir / f"{stem}.yaml"
    if family == 6:
        services6_yaml(services, flow_table)
    else:
        services_yaml(services, flow_table, n_backends=1)
    frames = 2 * flows
    mbufs = frames + EXTRA_MBUFS
    memory_mb = memory_for(frames, flow_table, hugepages)
    if hugepages:
        check_hugepages(memory_mb)
    case = {"case": name, "flows": flows, "family": family,
            "kind": "established, both directions", "frame_bytes": int(clients.shape[1]),
            "capture_frames": frames, "capture_seconds": round(gen_s, 2),
            "flow_table_size": flow_table, "mbufs": mbufs, "memory_mb": memory_mb,
            "ports": "net_pcap0,rx_pcap=CLIENTS,infinite_rx=1 and "
                     "net_pcap1,rx_pcap=REPLIES,infinite_rx=1 (tx dropped)",
            "sample": "frames sent per second by both ports together (Tx-pps of port 0 + "
                      "port 1)",
            "warm_up": "first block and blocks before one full pass of both captures dropped",
            "runs": {p: [] for p in PROGRAMS}, "_files": [capture, reply_capture]}

    def run(program: str) -> dict:
        return run_program(program, capture, flows, memory_mb, mbufs, services, seconds,
                           hugepages=hugepages, replies=reply_capture)
    return case, run


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
                "--", "--config", str(services), "--duration", "30",
                "--control-socket", "none"]
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
