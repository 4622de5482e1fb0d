"""rplb-bench's command line: the options, which cases a run measures,
and the output (a table, or JSON)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

from rplb.bench.common import PROG, BenchError, file_prefix, log, remove_runtime_dir, \
    rplb_command
from rplb.bench.control_plane import control_plane_report
from rplb.bench.engine import engine_report, maglev_build_ms
from rplb.bench.peers import run_both_directions_cases, run_case, time_to_first_packet
from rplb.bench.report import IPV6_FLOWS, evaluate_targets, format_table, ipv6_summary, \
    machine_info
from rplb.bench.traffic import FRAME_LEN, FRAME_LEN6, N_BACKENDS
from rplb.bench.workers import targets as workers_targets, workers_report

DEFAULT_FLOWS = (1, 1000, 65536, 1000000)
DEFAULT_NEW_FLOWS = 1000000


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
        "same virtual ports, lcores, mbuf count and burst size (IPv4 TCP at 1 to 1M "
        "established flows, all-new flows, and IPv6 next to IPv4 at 1,000 flows in both "
        "directions), plus Maglev build time, memory per flow, start-up time and the "
        "engine alone (with IPv6's instructions per packet next to IPv4's).",
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
    p.add_argument("--ipv6", action=argparse.BooleanOptionalAction, default=True,
                   help=f"the IPv6 case (issue 19, default: on): {IPV6_FLOWS:,} established "
                   f"IPv6 TCP flows of {FRAME_LEN6}-byte frames in both directions (port 0 "
                   "replays the clients' ACKs to an IPv6 VIP, port 1 the backend's replies, "
                   "both net_pcap infinite_rx), and its IPv4 twin (the same with 64-byte "
                   "IPv4 frames): rplb/5tswap of both, side by side, under "
                   f"'ipv6_{IPV6_FLOWS}_flows' in --json, with the engine's IPv6/IPv4 "
                   "instructions per packet (callgrind, goal <= 1.3) when the other "
                   "measurements run too")
    p.add_argument("--ipv6-only", action="store_true",
                   help="only the IPv6 case and its IPv4 twin (no --flows cases, no all-new "
                   "case, no other measurements)")
    p.add_argument("--quick", action="store_true",
                   help="smallest run: 1,000 flows, the IPv6 case and its twin, 1 round, "
                   "2 s, no all-new case, no callgrind (what CI runs)")
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
    p.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="only the case of N worker lcores: rplb with N workers against "
                   "dpdk-testpmd --nb-cores N on two net_pcap ports of N queues, both "
                   "directions of every flow, replies on their owner's queue and on the wrong "
                   "worker's, and rplb with one worker (--flows: its first count, default "
                   "1000)")
    p.add_argument("--hugepages", action="store_true",
                   help="run the throughput cases on hugepages (EAL without --no-huge; "
                   "needs a hugetlbfs mount and enough free pages, about 5 GB for the "
                   "million-frame captures), as an appliance runs; default: --no-huge")
    return p


def run(args: argparse.Namespace) -> dict:
    if args.quick:
        args.flows, args.rounds, args.seconds, args.no_new = [1000], 1, 2, True
    if args.ipv6_only:
        if args.only not in (None, "throughput"):
            raise BenchError(f"--ipv6-only runs throughput cases: not with --only {args.only}")
        if args.workers is not None:
            raise BenchError("--ipv6-only: not with --workers")
        args.only, args.flows, args.no_new, args.ipv6 = "throughput", [], True, True
    callgrind = (not args.quick) if args.callgrind is None else args.callgrind
    result: dict = {"machine": machine_info(args.hugepages),
                    "config": {"rounds": args.rounds, "seconds": args.seconds,
                               "flows": args.flows, "new_flows": None if args.no_new
                               else args.new_flows, "quick": args.quick,
                               "ipv6": args.ipv6, "ipv6_flows": IPV6_FLOWS if args.ipv6
                               else None,
                               "lcores": "0-1", "frame_bytes": FRAME_LEN,
                               "frame_bytes_ipv6": FRAME_LEN6,
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
        if args.workers is not None:
            flows = args.flows[0] if args.flows != list(DEFAULT_FLOWS) else 1000
            result["config"].update({"workers": args.workers, "flows": [flows],
                                     "lcores": None, "sink": "net_pcap tx drop"})
            result["workers_case"] = workers_report(workdir, args.workers, flows, args.rounds,
                                                    args.seconds)
            result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
            result["targets"] = workers_targets(result["workers_case"])
            return result
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
            if args.ipv6:
                result["throughput"] += run_both_directions_cases(
                    workdir, (6, 4), IPV6_FLOWS, args.rounds, args.seconds,
                    hugepages=args.hugepages)
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
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["targets"] = evaluate_targets(result)
    summary = ipv6_summary(result)
    if summary:
        result[f"ipv6_{IPV6_FLOWS}_flows"] = summary
    return result


def control_plane(workdir: Path, args: argparse.Namespace) -> dict:
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
