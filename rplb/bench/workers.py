"""rplb-bench --workers N: N worker lcores against dpdk-testpmd --nb-cores N.

Both directions of every flow, on two net_pcap ports of N queues each:

    port 0 (frontend)  rx queue q: CLIENTS_q   the clients' frames (ACKs) of
                                               the flows worker q owns
    port 1 (backend)   rx queue q: REPLIES_q   their backend's replies
    (every queue replays its capture forever; what is sent is dropped)

A flow's owner is a function of its client address (rplb's software
steering, rplb.dataplane.steering_owner), and each capture holds one
frame per flow, so after one pass of every capture each flow exists on its
owner (the replies before that are rewritten statelessly, then by flow).
Two placements of the replies:

    hardware-style   REPLIES_q holds the replies of worker q's flows: every
                     frame arrives at its owner, as a NIC steering by the
                     client address would place them (the workers still
                     compute every frame's owner: virtual ports steer in
                     software);
    wrong worker     REPLIES_q holds those of worker q+1's flows: every reply
                     arrives at the other worker and crosses a handoff ring.

The programs, on the same vdevs, lcores, mbufs and burst:

    dpdk-testpmd --forward-mode=5tswap --nb-cores N --rxq N --txq N
    rplb-dpdk (N workers), in each placement
    rplb-dpdk with one worker on the same vdevs (it polls queue 0 of each
    port: worker 0's flows and, hardware-style, their replies)

A sample is the frames sent per second on both ports together (the sum of
the two ports' Tx-pps); warm-up ends when both ports have received one
full pass of their captures.  The service has one backend, so every reply
comes from its flow's backend (the flow lookup finds it; Maglev's choice
among several would have to be predicted to write the replies).

Lcores: EAL's main lcore may run on any CPU (0@(0-C)), worker i on CPU
i mod C, for C CPUs: on two CPUs, with two workers, each worker has a CPU
and the main lcore (which sleeps) floats; testpmd gets the same map.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Dict, List

import numpy as np

from rplb.bench.common import BenchError, file_prefix, log, rplb_burst, rplb_command
from rplb.bench.peers import StatsParser, both_ports_samples, no_sample_error, run_until
from rplb.bench.traffic import ACK, BACKEND, BACKEND_PORT, VIP, VIP_PORT, client_tuples, \
    ipv4, services_yaml, tcp_frames, write_frames
PLACEMENTS = ("hardware-style", "wrong worker")

# Goals of issue 18 on a 2-CPU machine (reported, never enforced).
TARGETS = {"rplb_workers_vs_5tswap": 0.85, "rplb_workers_wrong_worker_vs_5tswap": 0.60}


def lcore_map(workers: int, cpus: int) -> str:
    """--lcores for the main lcore and `workers` workers on `cpus` CPUs."""
    main = "0@(0)" if cpus == 1 else f"0@(0-{cpus - 1})"
    return ",".join([main] + [f"{i + 1}@{i % cpus}" for i in range(workers)])


def owners(n_flows: int, workers: int) -> np.ndarray:
    from rplb.dataplane import steering_owner
    ips, _ = client_tuples(n_flows)
    return np.array([steering_owner(int(ip), workers) for ip in ips], np.int64)


def write_captures(workdir: Path, n_flows: int, workers: int) -> Dict[str, List[Path]]:
    """Per queue: the clients' frames of its worker's flows; the replies of
    its worker's flows (hardware-style) and of the next worker's (wrong
    worker).  Every worker owns some flows (refused otherwise)."""
    ips, ports = client_tuples(n_flows)
    owner = owners(n_flows, workers)
    clients = tcp_frames(ips, ports, ipv4(VIP), VIP_PORT, ACK)
    replies = tcp_frames(ipv4(BACKEND), BACKEND_PORT, ips, ports, ACK)
    out: Dict[str, List[Path]] = {"clients": [], "replies": []}
    for q in range(workers):
        mine = owner == q
        if not mine.any():
            raise BenchError(f"no flow of the {n_flows} is owned by worker {q}: give more "
                             "--flows")
        out["clients"].append(workdir / f"clients{q}.pcap")
        write_frames(out["clients"][-1], clients[mine])
        out["replies"].append(workdir / f"replies{q}.pcap")
        write_frames(out["replies"][-1], replies[mine])
    return out


def vdevs(captures: Dict[str, List[Path]], wrong_worker: bool) -> List[str]:
    replies = captures["replies"]
    if wrong_worker:
        # Queue q gets the replies of worker q+1's flows.
        replies = replies[1:] + replies[:1]
    return ["net_pcap0," + ",".join(f"rx_pcap={p}" for p in captures["clients"]) + ",infinite_rx=1",
            "net_pcap1," + ",".join(f"rx_pcap={p}" for p in replies) + ",infinite_rx=1"]


def eal(prefix: str, lcores: str, vdev_args: List[str], memory_mb: int) -> List[str]:
    args = ["--no-huge", "-m", str(memory_mb), "--no-pci", "--lcores", lcores,
            "--file-prefix", prefix, "--log-level=*:warning"]
    for vdev in vdev_args:
        args += ["--vdev", vdev]
    return args


def run_one(program: str, workers: int, lcores: str, vdev_args: List[str], frames: List[int],
            mbufs: int, memory_mb: int, services: Path, seconds: int, cwd: Path) -> dict:
    import shutil
    prefix = file_prefix(program.replace(" ", "_"))
    if program == "5tswap":
        testpmd = shutil.which("dpdk-testpmd")
        if testpmd is None:
            raise BenchError("dpdk-testpmd not found (apt-get install dpdk)")
        argv = [testpmd, *eal(prefix, lcores, vdev_args, memory_mb), "--",
                f"--total-num-mbufs={mbufs}", "--stats-period", "1", "--forward-mode=5tswap",
                "--no-mlockall", f"--burst={rplb_burst()}", f"--nb-cores={workers}",
                f"--rxq={workers}", f"--txq={workers}"]
        stdbuf = shutil.which("stdbuf")
        argv = [stdbuf, "-oL", *argv] if stdbuf else argv
    else:
        argv = [*rplb_command(), *eal(prefix, lcores, vdev_args, memory_mb), "--",
                "--mbufs", str(mbufs), "--stats-period", "1", "--config", str(services),
                "--control-socket", "none"]

    def enough(parser: StatsParser) -> bool:
        return len(both_ports_samples(parser.blocks, frames)) >= seconds

    rc, parser, stderr, elapsed = run_until(argv, program, prefix, cwd, enough)
    samples = both_ports_samples(parser.blocks, frames)[:seconds]
    if not samples:
        raise no_sample_error(program, rc, parser, stderr)
    result = {"program": program, "rc": rc, "seconds": round(elapsed, 2),
              "samples_pps": samples, "mpps": round(statistics.median(samples) / 1e6, 3)}
    for kind in ("events", "drops"):
        lines = [line for line in parser.extra if line.startswith(kind + ":")]
        if program != "5tswap" and lines:
            result[kind] = lines[-1]
    return result


def workers_report(workdir: Path, workers: int, n_flows: int, rounds: int,
                   seconds: int) -> dict:
    """The workers case: every program in turn, rounds times (the order
    rotates), medians of medians, and the ratios of issue 18."""
    if workers < 2:
        raise BenchError("--workers: give 2 or more (one worker is the other cases')")
    cpus = len(os.sched_getaffinity(0))
    lcores_n, lcores_1 = lcore_map(workers, cpus), lcore_map(1, cpus)
    captures = write_captures(workdir, n_flows, workers)
    per_queue = [int(x) for x in np.bincount(owners(n_flows, workers), minlength=workers)]
    services = workdir / "workers.yaml"
    services_yaml(services, 65536, n_backends=1)
    # A pool for the replayed captures (net_pcap keeps them in mbufs) and
    # rplb's rings, handoff rings and bursts with N workers, the same for all.
    mbufs = 2 * n_flows + 65535
    memory_mb = max(1024, int(mbufs * 4.1 / 1024) + 512)
    programs = {
        "5tswap": (workers, lcores_n, vdevs(captures, False)),
        "rplb hardware-style": (workers, lcores_n, vdevs(captures, False)),
        "rplb wrong worker": (workers, lcores_n, vdevs(captures, True)),
        "rplb one worker": (1, lcores_1, vdevs(captures, False)),
    }
    # One worker polls only queue 0 of each port: its frames per pass.
    frames = {name: ([n_flows, n_flows] if count > 1 else [per_queue[0], per_queue[0]])
              for name, (count, _, _) in programs.items()}
    runs: Dict[str, List[dict]] = {name: [] for name in programs}
    names = list(programs)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            count, lcores, vdev_args = programs[name]
            log(f"{workers} workers: round {r + 1}/{rounds}: {name}")
            program = "5tswap" if name == "5tswap" else name
            res = run_one(program, count, lcores, vdev_args, frames[name], mbufs, memory_mb,
                          services, seconds, workdir)
            log(f"{workers} workers: {name}: {res['mpps']} Mpps")
            runs[name].append(res)
    mpps = {name: round(statistics.median(r["mpps"] for r in rs), 3) for name, rs in runs.items()}
    testpmd, one = mpps["5tswap"], mpps["rplb one worker"]
    placements = {}
    for placement in PLACEMENTS:
        rplb = mpps[f"rplb {placement}"]
        # The counters of its runs: frames handed over, and dropped at a
        # full ring (a worker off its CPU on a shared machine fills them).
        counted = [counters(r) for r in runs[f"rplb {placement}"]]
        # The same ratios round by round (each round runs every program
        # back to back): this machine has phases in which everything runs
        # at about half speed, slower than a round but not than a run.
        by_round = [(r["mpps"] / t["mpps"], r["mpps"] / o["mpps"])
                    for r, t, o in zip(runs[f"rplb {placement}"], runs["5tswap"],
                                       runs["rplb one worker"])]
        placements[placement] = {
            "rplb_mpps": rplb,
            "rplb_vs_rplb_one_worker": round(rplb / one, 3) if one else None,
            "rplb_vs_5tswap": round(rplb / testpmd, 3) if testpmd else None,
            "rplb_vs_5tswap_by_round": [round(x, 3) for x, _ in by_round],
            "rplb_vs_rplb_one_worker_by_round": [round(y, 3) for _, y in by_round],
            "handoff_sent": [c.get("handoff_sent") for c in counted],
            "handoff_full": [c.get("handoff_full") for c in counted]}
    for path in captures["clients"] + captures["replies"]:
        path.unlink(missing_ok=True)
    return {"workers": workers, "flows": n_flows, "flows_per_worker": per_queue,
            "lcores": lcores_n, "lcores_one_worker": lcores_1, "cpus": cpus,
            "mbufs": mbufs, "mpps": mpps, "placements": placements, "runs": runs,
            "sample": "frames sent per second by both ports together (Tx-pps of port 0 + "
                      "port 1), after one full pass of every capture"}


def counters(run: dict) -> Dict[str, int]:
    """rplb's final events and drops of a run, by name."""
    out: Dict[str, int] = {}
    for kind in ("events", "drops"):
        for item in run.get(kind, "").split()[1:]:
            name, _, value = item.partition("=")
            if value.isdigit():
                out[name] = int(value)
    return out


def targets(report: dict) -> List[dict]:
    checks = []
    for placement, key in (("hardware-style", "rplb_workers_vs_5tswap"),
                           ("wrong worker", "rplb_workers_wrong_worker_vs_5tswap")):
        value = report["placements"][placement]["rplb_vs_5tswap"]
        if value is None:
            continue
        goal = TARGETS[key]
        checks.append({"target": f"{key} ({report['workers']} workers)", "value": value,
                       "goal": f">= {goal}", "met": value >= goal})
    return checks


def format_report(report: dict) -> List[str]:
    n = report["workers"]
    lines = [f"{n} workers (--lcores {report['lcores']}; one worker: "
             f"{report['lcores_one_worker']}), {report['flows']:,} flows "
             f"({', '.join(map(str, report['flows_per_worker']))} per worker), both "
             "directions, net_pcap x 2 ports x "
             f"{n} queues (infinite_rx), Mpps sent by both ports:",
             f"  testpmd 5tswap --nb-cores {n}: {report['mpps']['5tswap']:.2f}; rplb with one "
             f"worker: {report['mpps']['rplb one worker']:.2f}"]
    head = f"  {'replies':<18}{f'rplb({n})':>10}{f'/rplb(1)':>10}{f'/5tswap({n})':>13}"
    lines += [head, "  " + "-" * (len(head) - 2)]
    for placement in PLACEMENTS:
        p = report["placements"][placement]
        lines.append(f"  {placement:<18}{p['rplb_mpps']:>10.2f}"
                     f"{p['rplb_vs_rplb_one_worker']:>10.2f}{p['rplb_vs_5tswap']:>13.2f}")
    for placement in PLACEMENTS:
        p = report["placements"][placement]
        lines.append(f"  {placement}, round by round: rplb({n})/5tswap({n}) "
                     + " ".join(f"{x:.2f}" for x in p["rplb_vs_5tswap_by_round"])
                     + f"; rplb({n})/rplb(1) "
                     + " ".join(f"{x:.2f}" for x in p["rplb_vs_rplb_one_worker_by_round"]))
    wrong = report["placements"]["wrong worker"]
    lines.append("  wrong worker, by run: handed over "
                 + ", ".join(f"{x:,}" for x in wrong["handoff_sent"] if x is not None)
                 + "; dropped at a full ring "
                 + ", ".join(f"{x:,}" for x in wrong["handoff_full"] if x is not None))
    lines.append("  runs (Mpps): " + "; ".join(
        f"{name} " + " ".join(f"{r['mpps']:.1f}" for r in rs)
        for name, rs in report["runs"].items()))
    return lines
