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

from rplb.bench import common, engine, peers, report, traffic, workers

pytestmark = pytest.mark.skipif(shutil.which("dpdk-testpmd") is None,
                                reason="dpdk-testpmd is not installed")


def test_quick_json():
    import glob
    bench = subprocess.Popen([sys.executable, "-m", "rplb.bench", "--quick", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = bench.communicate(timeout=300)
    proc = subprocess.CompletedProcess(bench.args, bench.returncode, stdout, stderr)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)

    assert {"machine", "config", "command", "throughput", "maglev_build", "first_packet",
            "engine", "targets", "control_plane"} <= set(result)
    assert result["config"]["quick"] is True
    case, v6, v4 = result["throughput"]
    assert case["flows"] == 1000 and case["kind"] == "established"
    for program in ("io", "5tswap", "rplb"):
        assert case["mpps"][program] > 0
        (run,) = case["runs"][program]
        assert run["rc"] == 0 and run["samples_pps"]
    assert case["rplb_vs_5tswap"] > 0 and case["rplb_vs_io"] > 0
    # rplb really load-balanced the capture (it did not just pass it through)
    assert "flows_created=1000 " in case["runs"]["rplb"][0]["events"]

    # The IPv6 case and its IPv4 twin (issue 19): both directions, every
    # program measured, rplb created the 1,000 flows, sent the clients' frames
    # to the backend and the replies back through their flows, dropped none.
    assert (v6["case"], v6["family"], v6["frame_bytes"]) == (
        "IPv6 1000 flows, both directions", 6, 74)
    assert (v4["case"], v4["family"], v4["frame_bytes"]) == (
        "IPv4 1000 flows, both directions", 4, 64)
    for both in (v6, v4):
        assert both["kind"] == "established, both directions" and both["capture_frames"] == 2000
        assert all(both["mpps"][program] > 0 for program in ("io", "5tswap", "rplb"))
        (run,) = both["runs"]["rplb"]
        events = dict(item.split("=") for item in run["events"].split()[1:])
        drops = dict(item.split("=") for item in run["drops"].split()[1:])
        assert int(events["flows_created"]) == 1000
        assert int(events["to_backend"]) > 0 and int(events["to_client_by_flow"]) > 0
        assert int(events["reply_unmatched"]) == 0 and int(events["passed_through"]) == 0
        assert set(drops.values()) == {"0"}, drops
    summary = result["ipv6_1000_flows"]
    assert summary["ipv6_rplb_vs_5tswap"] == v6["rplb_vs_5tswap"] > 0
    assert summary["ipv4_rplb_vs_5tswap"] == v4["rplb_vs_5tswap"] > 0
    assert summary["ipv6_vs_ipv4_rplb_vs_5tswap"] == pytest.approx(
        v6["rplb_vs_5tswap"] / v4["rplb_vs_5tswap"], abs=0.001)
    assert summary["ipv4_one_direction_rplb_vs_5tswap"] == case["rplb_vs_5tswap"]

    assert set(result["maglev_build"]) == {"10", "100", "1000"}
    assert all(v["median_ms"] > 0 for v in result["maglev_build"].values())
    assert result["first_packet"]["first_frame_ms"] > 0

    engine = result["engine"]
    assert "error" not in engine, engine
    for mode in ("established", "new", "established6", "fwd"):
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

    # no runtime directories left behind (this run's: their file prefixes
    # carry its pid; other runs of rplb-bench may go on at the same time)
    assert glob.glob(f"/var/run/dpdk/rplbbench{bench.pid}_*") == []


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


def test_ipv6_capture_frames_are_valid_tcp():
    """The IPv6 case's frames (issue 19): 74 bytes, the smallest IPv6 TCP
    frame; the clients' ACKs to the VIP and the backend's replies to those
    very clients, TCP checksums recomputed by scapy, distinct 5-tuples.
    The IPv4 twin's replies come from its one backend the same way."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    clients, replies = traffic.both_directions_frames(70000, 6)
    assert clients.shape == replies.shape == (70000, 74)
    for i in (0, 1, 65535, 65536, 69999):
        client, reply = Ether(bytes(clients[i])), Ether(bytes(replies[i]))
        assert client.type == reply.type == 0x86DD
        assert (client[IPv6].dst, client[TCP].dport) == (traffic.VIP6, 80)
        assert (reply[IPv6].src, reply[TCP].sport) == (traffic.BACKEND6, traffic.BACKEND_PORT)
        assert (reply[IPv6].dst, reply[TCP].dport) == (client[IPv6].src, client[TCP].sport)
        for pkt in (client, reply):
            assert pkt[IPv6].plen == 20 and pkt[IPv6].nh == 6 and pkt[IPv6].hlim == 64
            assert pkt[TCP].flags == "A" and pkt[TCP].dataofs == 5
            tcp_sum = pkt[TCP].chksum
            del pkt[TCP].chksum
            assert Ether(bytes(pkt))[TCP].chksum == tcp_sum
    assert str(Ether(bytes(clients[65537]))[IPv6].src) == "2001:2::1"
    tuples = {(bytes(f[22:38]), bytes(f[54:56])) for f in clients}
    assert len(tuples) == 70000

    clients4, replies4 = traffic.both_directions_frames(10, 4)
    assert clients4.shape == replies4.shape == (10, 64)
    client, reply = Ether(bytes(clients4[3])), Ether(bytes(replies4[3]))
    assert (reply[IP].src, reply[TCP].sport) == (traffic.BACKEND, traffic.BACKEND_PORT)
    assert (reply[IP].dst, reply[TCP].dport) == (client[IP].src, client[TCP].sport)


def test_ipv6_case_ports_and_services(tmp_path):
    """Both directions: port 1 replays the replies instead of the net_null
    sink; the IPv6 services file loads, one service of one IPv6 backend."""
    from rplb import config

    argv = peers.eal_args("p", "c.pcap", 1024, False, replies="r.pcap")
    assert "net_pcap1,rx_pcap=r.pcap,infinite_rx=1" in argv
    assert not any(a.startswith("net_null") for a in argv)
    assert "net_null0,no-rx=1" in peers.eal_args("p", "c.pcap", 1024, False)
    path = tmp_path / "v6.yaml"
    traffic.services6_yaml(path, 1048576)
    loaded = config.load_config(path)
    (service,) = loaded.services
    assert str(service.vip) == traffic.VIP6 and service.port == 80
    assert [str(b.ip) for b in service.backends] == [traffic.BACKEND6]


def test_ipv6_summary_and_table():
    """IPv6 next to IPv4: the ratios of the two cases of both directions,
    and the engine's instructions per packet against the goal of 1.3."""
    def case(family, r):
        return {"case": peers.both_directions_case_name(family, 1000), "family": family,
                "kind": "established, both directions", "frame_bytes": 74 if family == 6 else 64,
                "mpps": {"io": 30.0, "5tswap": 20.0, "rplb": 20.0 * r},
                "rplb_vs_5tswap": r, "rplb_vs_io": r}
    result = {"machine": {"cpu": "x", "cpus": 2, "memory_gb": 1, "kernel": "k", "dpdk": "d"},
              "config": {"rounds": 1, "seconds": 2},
              "throughput": [case(6, 0.6), case(4, 0.9)],
              "engine": {"established": {"instructions_per_packet_no_io": 144.7},
                         "established6": {"instructions_per_packet_no_io": 181.8}}}
    summary = report.ipv6_summary(result)
    assert summary["ipv6_vs_ipv4_rplb_vs_5tswap"] == pytest.approx(0.667, abs=0.001)
    ins = summary["engine_instructions_per_packet_no_io"]
    assert ins["ipv6_vs_ipv4"] == pytest.approx(1.256, abs=0.001) and ins["met"]
    result["ipv6_1000_flows"] = summary
    table = report.format_table({**result, "engine": {}})    # the summary carries them
    assert "IPv6 1000 flows, both directions (74 B)" in table
    assert "IPv6/IPv4 0.67" in table and "IPv6/IPv4 1.26 (goal <= 1.3): met" in table
    result["engine"]["established6"]["instructions_per_packet_no_io"] = 200.0
    assert not report.ipv6_summary(result)["engine_instructions_per_packet_no_io"]["met"]
    assert report.ipv6_summary({"throughput": []}) is None


def test_ipv6_only_is_a_throughput_case():
    from rplb.bench import cli
    for extra in (["--only", "other"], ["--workers", "2"]):
        args = cli.build_parser().parse_args(["--ipv6-only", *extra])
        with pytest.raises(common.BenchError, match="--ipv6-only"):
            cli.run(args)


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


# ---- rplb-bench --workers N ---------------------------------------------------------

def test_workers_captures_place_each_flow_on_its_owner_or_the_other_worker(tmp_path):
    """Queue q of the frontend holds the clients' frames of the flows worker
    q owns; of the backend, their replies (hardware-style) or those of worker
    q+1's flows (wrong worker); every frame checksummed right."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.utils import rdpcap

    from rplb.dataplane import steering_owner

    captures = workers.write_captures(tmp_path, 300, 2)
    for q in range(2):
        clients = [Ether(bytes(p)) for p in rdpcap(str(captures["clients"][q]))]
        replies = [Ether(bytes(p)) for p in rdpcap(str(captures["replies"][q]))]
        assert clients and len(clients) == len(replies)
        for client, reply in zip(clients, replies):
            assert steering_owner(client[IP].src, 2) == q
            assert (client[IP].dst, client[TCP].dport) == (traffic.VIP, traffic.VIP_PORT)
            # the reply of that very flow, from the service's one backend
            assert (reply[IP].src, reply[TCP].sport) == (workers.BACKEND, workers.BACKEND_PORT)
            assert (reply[IP].dst, reply[TCP].dport) == (client[IP].src, client[TCP].sport)
            for pkt in (client, reply):
                sums = pkt[IP].chksum, pkt[TCP].chksum
                del pkt[IP].chksum, pkt[TCP].chksum
                again = Ether(bytes(pkt))
                assert (again[IP].chksum, again[TCP].chksum) == sums
    hardware, wrong = workers.vdevs(captures, False), workers.vdevs(captures, True)
    assert hardware[0] == wrong[0]       # the clients' frames: on their owner's queue
    assert f"rx_pcap={captures['replies'][1]},rx_pcap={captures['replies'][0]}" in wrong[1]
    assert f"rx_pcap={captures['replies'][0]},rx_pcap={captures['replies'][1]}" in hardware[1]
    assert workers.lcore_map(2, 2) == "0@(0-1),1@0,2@1"
    assert workers.lcore_map(1, 2) == "0@(0-1),1@0"


def test_workers_samples_count_both_ports_after_a_full_pass():
    blocks = [{0: {"rx_packets": rx, "tx_pps": 1}, 1: {"rx_packets": rx, "tx_pps": 2 * i}}
              for i, rx in enumerate((10, 100, 200, 300))]
    # captures of 100 frames on each port: blocks after the second count
    assert workers.both_ports_samples(blocks, [100, 100]) == [1 + 4, 1 + 6]


def test_workers_case_runs_and_reports_issue_18s_ratios():
    """`rplb-bench --workers 2`, smallest: every program gave samples, the
    replies of the wrong-worker placement crossed the rings and were
    translated through their flows (rplb's counters), and the report has
    both ratios for both placements (none is asserted: a shared machine)."""
    proc = subprocess.run([sys.executable, "-m", "rplb.bench", "--workers", "2", "--rounds", "1",
                           "--seconds", "1", "--flows", "200", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    case = result["workers_case"]
    assert case["workers"] == 2 and sum(case["flows_per_worker"]) == 200
    assert set(case["mpps"]) == {"5tswap", "rplb hardware-style", "rplb wrong worker",
                                 "rplb one worker"}
    assert all(v > 0 for v in case["mpps"].values())
    for placement in ("hardware-style", "wrong worker"):
        p = case["placements"][placement]
        assert p["rplb_vs_rplb_one_worker"] > 0 and p["rplb_vs_5tswap"] > 0
    events = {name: dict(item.split("=") for item in runs[0]["events"].split()[1:])
              for name, runs in case["runs"].items() if name != "5tswap"}
    assert int(events["rplb hardware-style"]["handoff_sent"]) == 0
    assert int(events["rplb wrong worker"]["handoff_sent"]) > 0
    assert int(events["rplb wrong worker"]["to_client_by_flow"]) > 0
    assert {t["target"] for t in result["targets"]} == {
        "rplb_workers_vs_5tswap (2 workers)", "rplb_workers_wrong_worker_vs_5tswap (2 workers)"}
    assert "load_average_at_end" in result["machine"]
