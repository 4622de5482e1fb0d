"""The parts alone: the Maglev builder's time, and the engine alone
(rplb-bench-engine, built from benchmarks/bench_engine.c: process_burst
called directly, in ns/packet, and its instructions/packet counted by
valgrind's callgrind)."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

from rplb.bench.common import BenchError

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
    for build in sorted((here.parent.parent / "build").glob("*/benchmarks/rplb-bench-engine")):
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
        # --mode replies times the bursts of the backend port, a function of
        # their own; --mode steered and handoff theirs (measured_burst_*).
        measured = "measured_reply_burst" if "replies" in args else "measured_burst*"
        cmd = ["valgrind", "--tool=callgrind", f"--toggle-collect={measured}",
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
             "replies": ["--mode", "replies", "--flows", "1000"],
             # IPv6 (issue 19): the established case over IPv6 (csrc/lb_ipv6.c).
             "established6": ["--mode", "established6", "--flows", "1000"],
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
