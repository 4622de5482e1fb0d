"""rplb-bench still runs: `rplb-bench --quick --json` once, valid JSON with the
expected keys and non-zero throughput.  A benchmark is not a test: no speed
is asserted (the machine is shared and noisy)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rplb.bench import common, engine, peers, report, traffic

pytestmark = pytest.mark.skipif(shutil.which("dpdk-testpmd") is None,
                                reason="dpdk-testpmd is not installed")


def test_quick_json():
    import glob
    # runtime directories of earlier, killed runs are not this run's leak
    leftovers_before = set(glob.glob("/var/run/dpdk/rplbbench*"))
    proc = subprocess.run([sys.executable, "-m", "rplb.bench", "--quick", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)

    assert {"machine", "config", "command", "throughput", "maglev_build", "first_packet",
            "engine", "targets", "control_plane"} <= set(result)
    assert result["config"]["quick"] is True
    (case,) = result["throughput"]
    assert case["flows"] == 1000 and case["kind"] == "established"
    for program in ("io", "5tswap", "rplb"):
        assert case["mpps"][program] > 0
        (run,) = case["runs"][program]
        assert run["rc"] == 0 and run["samples_pps"]
    assert case["rplb_vs_5tswap"] > 0 and case["rplb_vs_io"] > 0
    # rplb really load-balanced the capture (it did not just pass it through)
    assert "flows_created=1000 " in case["runs"]["rplb"][0]["events"]

    assert set(result["maglev_build"]) == {"10", "100", "1000"}
    assert all(v["median_ms"] > 0 for v in result["maglev_build"].values())
    assert result["first_packet"]["first_frame_ms"] > 0

    engine = result["engine"]
    assert "error" not in engine, engine
    for mode in ("established", "new", "fwd"):
        assert engine[mode]["ns_per_packet"] > 0
    assert engine["memory"]["bytes_per_flow_allocated"] > 0
    assert engine["memory"]["bytes_per_flow_model"] > 0
    assert all({"target", "value", "goal", "met"} <= set(t) for t in result["targets"])

    # The control-plane case ran against a real rplb-dpdk: the edits and the
    # reload took effect (every figure measured, none asserted).
    control = result["control_plane"]
    assert control["services"] == 500 and control["loaded"] == {"services": 500,
                                                                "backends": 5000}
    for kind in ("set_weight", "backend_add", "backend_del"):
        assert control["edit_ms"][kind]["n"] == 10 and control["edit_ms"][kind]["median"] > 0
    assert len(control["full_reload_s"]["runs"]) == 1
    assert control["readers_during_reload_ms"]["status"]["n"] > 0
    assert control["readers_idle_ms"]["telemetry"]["n"] > 0
    assert {t["target"] for t in control["targets"]} >= {
        "set_weight_ms_median_500_services", "full_reload_s_500_services"}
    # Its last scrape was checked whole: every backend's series, and the age.
    scrape = control["prometheus"]
    assert scrape["samples_by_family"]["rplb_backend_packets_total"] == 5000
    assert scrape["last_line"].startswith("rplb_metrics_age_seconds ")

    # no runtime directories left behind
    assert set(glob.glob("/var/run/dpdk/rplbbench*")) <= leftovers_before


def test_the_1m_target_reports_what_the_source_allows():
    """The 1M-flow target (rplb at 1M against rplb at 1,000) comes with the
    most the replayed source allows: io's times model the source and sink,
    rplb's own work is its time minus io's.  Figures of stop 12's run."""
    small = {"case": "1000 flows", "mpps": {"io": 25.561, "5tswap": 17.672, "rplb": 14.159},
             "rplb_vs_5tswap": 0.801}
    large = {"case": "1000000 flows", "mpps": {"io": 13.636, "5tswap": 9.439, "rplb": 8.134},
             "rplb_vs_5tswap": 0.862}
    bound = report.scaling_ceiling(small, large)
    own_ns = 1000 / 14.159 - 1000 / 25.561
    assert bound["rplb_own_ns_per_packet"] == pytest.approx(own_ns, abs=0.05)
    assert bound["io_large_vs_small"] == pytest.approx(13.636 / 25.561, abs=0.001)
    assert bound["rplb_own_ns_per_packet_large"] == pytest.approx(
        1000 / 8.134 - 1000 / 13.636, abs=0.05)
    assert bound["ceiling"] == pytest.approx((1000 / 14.159) / (1000 / 13.636 + own_ns),
                                             abs=0.001)
    assert 0.67 < bound["ceiling"] < 0.68
    # a faster rplb (less own work) has a lower ceiling
    faster = dict(small, mpps=dict(small["mpps"], rplb=18.0))
    assert report.scaling_ceiling(faster, large)["ceiling"] < bound["ceiling"]

    (check,) = [t for t in report.evaluate_targets({"throughput": [small, large]})
                if t["target"] == "rplb_1m_flows_vs_rplb_1000_flows"]
    assert check["value"] == pytest.approx(8.134 / 14.159, abs=0.001)
    assert not check["met"]
    assert check["source_bound"] == bound
    # a missing figure gives no bound rather than an error
    assert report.scaling_ceiling(small, {"mpps": {"io": 0}}) is None


def test_capture_frames_are_valid_tcp():
    """The generated frames carry correct IPv4 and TCP checksums (checked
    with scapy), distinct 5-tuples, and 64 bytes each."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    frames = traffic.make_frames(300, syn=True, first=65530)
    assert frames.shape == (300, 64)
    tuples = set()
    for raw in frames[::37]:
        pkt = Ether(bytes(raw))
        ip_sum, tcp_sum = pkt[IP].chksum, pkt[TCP].chksum
        del pkt[IP].chksum, pkt[TCP].chksum
        again = Ether(bytes(pkt))
        assert (again[IP].chksum, again[TCP].chksum) == (ip_sum, tcp_sum)
        assert pkt[TCP].flags == "S" and pkt[IP].dst == traffic.VIP
    src = frames[:, 26:30].copy().view(">u4").ravel()
    sport = frames[:, 34:36].copy().view(">u2").ravel()
    tuples = set(zip(src.tolist(), sport.tolist()))
    assert len(tuples) == 300
    assert np.all(frames[:, 47] == 0x02)


def test_stats_parser_and_warm_up():
    """Blocks as testpmd prints them; warm-up drops the first block and those
    that started before one full pass of the capture."""
    def block(rx0, tx_pps1):
        return (f"  ######################## NIC statistics for port 0  ########\n"
                f"  RX-packets: {rx0}          RX-missed: 0          RX-bytes:  0\n"
                f"  TX-packets: 0          TX-errors: 0          TX-bytes:  0\n"
                f"  Rx-pps:            5          Rx-bps:            0\n"
                f"  Tx-pps:            0          Tx-bps:            0\n"
                f"  ####################################\n"
                f"  ######################## NIC statistics for port 1  ########\n"
                f"  RX-packets: 0          RX-missed: 0          RX-bytes:  0\n"
                f"  TX-packets: {rx0}          TX-errors: 0          TX-bytes:  0\n"
                f"  Rx-pps:            0          Rx-bps:            0\n"
                f"  Tx-pps: {tx_pps1:>12}          Tx-bps:            0\n"
                f"  ####################################\n")
    parser = peers.StatsParser()
    text = block(500, 1) + block(1500, 2) + block(9000, 3) + block(20000, 4)
    text += "\n  ---------------------- final statistics ----------------------\n"
    text += block(30000, 0)
    for line in text.splitlines():
        parser.feed(line)
    assert len(parser.blocks) == 4
    # capture of 1000 frames: the block after 500 received is still warm-up
    assert peers.steady_samples(parser.blocks, 1000) == [3, 4]
    assert peers.first_pass_samples(parser.blocks, 9000) == [2, 3]


def test_engine_benchmark_is_found_where_meson_builds_it():
    """rplb-bench-engine is built from benchmarks/: an installed wheel has it
    next to rplb-bench's modules (rplb/bench/), a build directory of the
    source tree under benchmarks/."""
    binary = engine.find_engine_binary()
    assert binary is not None
    installed = binary.parent == Path(engine.__file__).resolve().parent
    assert installed or binary.parent.name == "benchmarks", binary


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_engine_instructions_without_io():
    """The goal's measure: callgrind's count minus net_null's tx burst.  The
    tx part must be found, be the same for every engine (the same frames
    reach the same sink), and be most of the pass-through engine."""
    binary = engine.find_engine_binary()
    assert binary is not None
    runs = {mode: engine.run_engine(binary, ["--mode", mode, "--bursts", "300"], valgrind=True)
            for mode in ("established", "fwd")}
    for mode, run in runs.items():
        assert 0 < run["instructions_per_packet_no_io"] < run["instructions_per_packet"], mode
        assert run["tx_instructions_per_packet"] == pytest.approx(
            run["instructions_per_packet"] - run["instructions_per_packet_no_io"], abs=0.2)
    assert runs["established"]["tx_instructions_per_packet"] == pytest.approx(
        runs["fwd"]["tx_instructions_per_packet"], rel=0.05)
    assert runs["fwd"]["instructions_per_packet_no_io"] < 40


def test_hugepages_option_says_what_is_missing():
    """--hugepages checks the mount and the free pages before any run, and
    the error says how to get them (this asks for a petabyte)."""
    with pytest.raises(common.BenchError) as err:
        peers.check_hugepages(10**9)
    text = str(err.value)
    assert "--hugepages" in text and "nr_hugepages" in text and "hugetlbfs" in text
    # the EAL arguments: --no-huge only without the option
    assert "--no-huge" in peers.eal_args("p", "c.pcap", 1024, hugepages=False)
    assert "--no-huge" not in peers.eal_args("p", "c.pcap", 1024, hugepages=True)


def test_testpmd_reads_bursts_as_large_as_rplb():
    """Every program reads as many packets at once: testpmd gets --burst
    set to rplb's rx burst (RPLB_BURST in rplb.h), and rplb gets no other."""
    from rplb import contract
    assert contract.BURST == 64
    for program in ("io", "5tswap"):
        argv = peers.program_argv(program, "p", "c.pcap", 1024, 20000, None, 1.0)
        assert f"--burst={contract.BURST}" in argv
        assert f"--forward-mode={program}" in argv
    argv = peers.program_argv("rplb", "p", "c.pcap", 1024, 20000, "s.yaml", 1.0)
    assert not any(a.startswith("--burst") for a in argv)
