"""rplb-dpdk's command line: every bad input gets one `rplb-dpdk: error:` line,
a non-zero exit and no traceback; SIGINT/SIGTERM and --duration stop cleanly.

Each case runs the real CLI in its own process (EAL initialises once per
process) with its own --file-prefix, whose runtime directory is removed.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from harness import (RPLB, LiveRplb, eal_args, file_prefix, read_pcap, remove_runtime_dir, run_cli,
                     run_rplb, write_pcap)

ERROR = "rplb-dpdk: error:"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "services.yaml"


def error_line(proc, rc: int = 1) -> str:
    """The one `rplb-dpdk: error:` line of a failed run (EAL may print more)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == rc, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.startswith(ERROR)]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def pcap_vdevs(tmp_path: Path, count: int = 2):
    vdevs = []
    for i in range(count):
        rx = write_pcap(tmp_path / f"in{i}.pcap", frames(i))
        vdevs.append(f"net_pcap{i},rx_pcap={rx},tx_pcap={tmp_path / f'out{i}.pcap'}")
    return vdevs


def frames(tag: int):
    return [bytes(Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b")
                  / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000 + tag, dport=n)
                  / Raw(b"x" * (10 + n))) for n in range(5)]


def run_eal(tmp_path, vdevs, rplb_args=(), lcores="0-1", extra_eal=(), timeout=60):
    """rplb-dpdk with the harness's EAL options plus extra_eal, then `--` rplb_args.
    A --duration keeps a run that wrongly starts forwarding from hanging."""
    prefix = file_prefix()
    try:
        return run_cli([*eal_args(prefix, vdevs, lcores), *extra_eal, "--",
                        "--duration", "3", "--control-socket", "none", *rplb_args],
                       timeout=timeout, cwd=tmp_path)
    finally:
        remove_runtime_dir(prefix)


# ---- ports -----------------------------------------------------------------

def test_unknown_port_id_names_it_and_lists_the_available_ports(tmp_path):
    line = error_line(run_eal(tmp_path, pcap_vdevs(tmp_path), ["--ports", "0,5"]))
    assert "port 5" in line and "does not exist" in line
    assert "available: 0, 1" in line


@pytest.mark.parametrize("count", [1, 0], ids=["one-vdev", "no-ports"])
def test_fewer_than_two_ports_asks_for_two_and_shows_vdev(tmp_path, count):
    line = error_line(run_eal(tmp_path, pcap_vdevs(tmp_path, count)))
    assert "needs two DPDK ports" in line
    assert f"found {count}" in line
    assert "--vdev net_pcap0," in line


def test_vdev_that_fails_to_probe_is_named(tmp_path):
    # DPDK 22.11 only logs "vdev_probe(): failed to initialize net_pcap0 device"
    # and "EAL: Bus (vdev) probe failed.": rte_eal_init still succeeds, the
    # port is simply missing (and later ports' ids shift).
    vdevs = ["net_pcap0,rx_pcap=/nonexistent.pcap", *pcap_vdevs(tmp_path)[1:]]
    proc = run_eal(tmp_path, vdevs)
    line = error_line(proc)
    assert "--vdev net_pcap0 failed to probe" in line
    assert "check its arguments" in line
    assert "/nonexistent.pcap" in proc.stderr          # DPDK's own reason, above our line


def test_failed_vdev_is_refused_even_when_two_ports_remain(tmp_path):
    # Otherwise --ports 0,1 would silently mean net_pcap1 and net_pcap2.
    vdevs = ["net_pcap0,rx_pcap=/nonexistent.pcap", *pcap_vdevs(tmp_path, 3)[1:]]
    line = error_line(run_eal(tmp_path, vdevs))
    assert "--vdev net_pcap0 failed to probe" in line


# ---- EAL -------------------------------------------------------------------

def test_bad_eal_argument_says_eal_could_not_be_initialised(tmp_path):
    line = error_line(run_eal(tmp_path, pcap_vdevs(tmp_path), extra_eal=["--no-such-eal-flag"]))
    assert "cannot initialise DPDK's EAL" in line
    assert "EAL options before `--`" in line


def test_rplb_option_before_double_dash_is_explained(tmp_path):
    # --duration lands in EAL's argv: EAL rejects it, our line says where it belongs.
    line = error_line(run_eal(tmp_path, pcap_vdevs(tmp_path), extra_eal=["--duration", "1"]))
    assert "cannot initialise DPDK's EAL" in line and "before `--`" in line


def test_eal_option_without_double_dash_is_explained():
    line = error_line(run_cli(["--no-huge", "-l", "0-1"]), rc=2)
    assert "unrecognized arguments: --no-huge -l 0-1" in line
    assert "EAL options go before `--`" in line


def test_no_hugepages_suggests_no_huge(tmp_path):
    from rplb.appliance import hugepages_reserved
    if hugepages_reserved():
        pytest.skip("this machine has hugepages reserved")
    prefix = file_prefix()
    try:
        proc = run_cli(["-m", "512", "--no-pci", "-l", "0-1", "--file-prefix", prefix,
                        *[a for v in pcap_vdevs(tmp_path) for a in ("--vdev", v)], "--",
                        "--control-socket", "none"],
                       cwd=tmp_path)
    finally:
        remove_runtime_dir(prefix)
    line = error_line(proc)
    assert "no hugepages" in line and "--no-huge" in line


def test_one_lcore_asks_for_a_worker_lcore(tmp_path):
    line = error_line(run_eal(tmp_path, pcap_vdevs(tmp_path), lcores="0"))
    assert "worker lcore" in line and "-l 0-1" in line


# ---- rplb options ----------------------------------------------------------

@pytest.mark.parametrize("ports", ["0", "a,b", "1,1", "0,1,2", ""])
def test_bad_ports_syntax_teaches_f_b(ports):
    line = error_line(run_cli(["--ports", ports]), rc=2)
    assert "--ports" in line and "F,B" in line and "e.g. 0,1" in line


def test_missing_config_file_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "services.yaml"
    line = error_line(run_eal(tmp_path, pcap_vdevs(tmp_path), ["--config", str(missing)]))
    assert str(missing) in line and "cannot read file" in line


@pytest.mark.parametrize("text, problem", [
    ("services: [\n  - vip: 1\n", "invalid YAML at line 2"),
    ("services:\n  - vip: 10.0.0.100\n    port: 80\n", "proto"),
], ids=["yaml-syntax", "missing-key"])
def test_invalid_config_file_is_named(tmp_path, text, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    line = error_line(run_eal(tmp_path, pcap_vdevs(tmp_path), ["--config", str(path)]))
    assert str(path) in line and problem in line


def test_list_drivers_shows_pcap_and_null_arguments_without_eal(tmp_path):
    prefix = file_prefix()
    proc = run_cli(["--no-huge", "--file-prefix", prefix, "--", "--list-drivers"],
                   timeout=30, cwd=tmp_path)
    # EAL never ran: it would have created its runtime directory.
    assert not os.path.exists(f"/var/run/dpdk/{prefix}")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "EAL" not in proc.stderr
    drivers = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    for arg in ("rx_pcap", "tx_pcap", "iface", "infinite_rx"):
        assert arg in drivers["net_pcap"], drivers["net_pcap"]
    assert "no-rx" in drivers["net_null"]


def test_help_explains_eal_options_and_signals():
    proc = run_cli(["--help"])
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    out = proc.stdout
    assert "[EAL options] --" in out and "before `--`" in out
    for option in ("--ports", "--config", "--stats-period", "--duration", "--vdev"):
        assert option in out, option
    assert "SIGHUP" in out and "SIGINT" in out and "SIGTERM" in out


def test_unwritable_stats_json_is_named(tmp_path):
    path = tmp_path / "nowhere" / "stats.json"
    proc = run_eal(tmp_path, pcap_vdevs(tmp_path),
                   ["--duration", "0.2", "--stats-json", str(path)])
    line = error_line(proc)
    assert "--stats-json" in line and str(path) in line and "No such file" in line
    assert "final statistics" in proc.stdout          # the run itself completed


# ---- stopping --------------------------------------------------------------

def frames_in(path: Path) -> int:
    """Frames in a tx pcap the running process may be writing (0 if unreadable yet)."""
    try:
        return len(read_pcap(path))
    except Exception:       # a record half written: look again later
        return 0


def assert_complete_pcap(path: Path, expected):
    """Header plus every record, nothing truncated, and the frames we sent."""
    assert read_pcap(path) == expected
    assert path.stat().st_size == 24 + sum(16 + len(f) for f in expected)


@pytest.mark.parametrize("signo", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_gracefully(tmp_path, signo):
    prefix = file_prefix()
    live = LiveRplb([*eal_args(prefix, pcap_vdevs(tmp_path)), "--", "--control-socket",
                     str(tmp_path / "rplb.sock")], prefix, cwd=tmp_path)
    try:
        live.wait_for_stderr("forwarding with")
        # The tx pcaps are flushed after every burst: wait until the worker
        # has forwarded both small rx pcaps, then stop it.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
                frames_in(tmp_path / "out0.pcap") == frames_in(tmp_path / "out1.pcap")
                == len(frames(0))):
            time.sleep(0.05)
        live.signal(signo)
        live.proc.wait(timeout=30)
    finally:
        rc, out = live.stop()
    stderr = "\n".join(live.stderr_lines)
    assert "Traceback" not in stderr, stderr
    assert rc == 0, stderr
    assert f"{signal.Signals(signo).name}: stopping" in stderr
    assert "final statistics" in out
    assert "NIC statistics for port 0" in out and "NIC statistics for port 1" in out
    # The ports were closed: both tx pcaps hold every frame of the other side.
    assert_complete_pcap(tmp_path / "out1.pcap", frames(0))
    assert_complete_pcap(tmp_path / "out0.pcap", frames(1))


def test_duration_stops_by_itself(tmp_path):
    started = time.monotonic()
    run = run_rplb(tmp_path, frames(0), frames(1), duration=0.5, timeout=30)
    elapsed = time.monotonic() - started
    assert run.rc == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert "final statistics" in run.stdout
    assert run.backend_out == frames(0) and run.frontend_out == frames(1)
    assert 0.5 <= elapsed < 20


# ---- refusals: what cannot work is refused with the limit named -------------

def default_mbuf_need(mbufs: int):
    from rplb import contract, sizing
    return sizing.mbufs_needed(mbufs, ports=2, queues_per_port=1, workers=1,
                               rx_descriptors=1024, tx_descriptors=1024,
                               burst=contract.BURST)


def test_too_few_mbufs_names_what_the_rings_and_bursts_need(tmp_path):
    line = error_line(run_eal(tmp_path, pcap_vdevs(tmp_path), ["--mbufs", "10"]))
    need = default_mbuf_need(10)
    assert "--mbufs 10 is too few" in line
    assert need.explain() in line and f"give --mbufs {need.total} or more" in line
    # today's formula, spelled out: 2 ports x 1 queue x (1024 + 1024) + 1 worker x
    # (3 bursts of 64 + 1.5 x a cache of 5 mbufs)
    assert need.total == 2 * 1 * (1024 + 1024) + 1 * (3 * 64 + 7)


def test_mbufs_exactly_what_is_needed_start_and_one_fewer_is_refused(tmp_path):
    need = default_mbuf_need(16383).total       # the cache size is the same near it
    assert default_mbuf_need(need - 1).total == need
    line = error_line(run_eal(tmp_path, pcap_vdevs(tmp_path), ["--mbufs", str(need - 1)]))
    assert f"--mbufs {need - 1} is too few" in line and f"give --mbufs {need} or more" in line
    run = run_rplb(tmp_path, frames(0), frames(1), rplb_args=["--mbufs", str(need)])
    assert run.rc == 0, run.stderr
    assert run.backend_out == frames(0) and run.frontend_out == frames(1)


def test_mbuf_need_grows_with_ports_queues_workers_descriptors_and_burst():
    from rplb import sizing
    base = dict(ports=2, queues_per_port=1, workers=1, rx_descriptors=1024,
                tx_descriptors=1024, burst=64)
    total = sizing.mbufs_needed(16383, **base).total
    # several workers per port: a queue of its own on each port, its own
    # bursts and its own mempool cache
    more = sizing.mbufs_needed(16383, **dict(base, queues_per_port=2, workers=2)).total
    assert more == total + 2 * 2048 + (3 * 64 + 384)
    assert sizing.mbufs_needed(16383, **dict(base, rx_descriptors=2048)).total == total + 2048
    assert sizing.mbufs_needed(16383, **dict(base, burst=32)).total == total - 3 * 32


@pytest.mark.parametrize("count", ["7", "1000", "0", "65536"])
def test_descriptor_count_not_a_power_of_two_is_refused(count):
    line = error_line(run_cli(["--descriptors", count]), rc=2)
    assert f"--descriptors: {count} is not a power of two between 1 and 32768" in line


def test_descriptor_count_outside_the_port_limits_is_named():
    # Every virtual device here reports DPDK's default limits (0..65535,
    # align 1), so the rule is checked with a NIC's: ixgbe's rx_desc_lim.
    from rplb.sizing import check_port_descriptors
    ixgbe = {"rx": {"min": 32, "max": 4096, "align": 8},
             "tx": {"min": 32, "max": 4096, "align": 8}}
    assert check_port_descriptors(1024, 1024, ixgbe, "port 0") is None
    assert check_port_descriptors(8192, 1024, ixgbe, "port 0 (0000:03:00.0, net_ixgbe)") == (
        "--descriptors 8192: port 0 (0000:03:00.0, net_ixgbe) takes between 32 and 4096, "
        "a multiple of 8 rx descriptors per queue (its rte_eth_dev_info desc_lim)")
    assert "between 32 and 4096" in check_port_descriptors(1024, 16, ixgbe, "port 1")
    assert "multiple of 8" in check_port_descriptors(
        4, 4, {"rx": {"min": 0, "max": 4096, "align": 8}, "tx": ixgbe["tx"]}, "port 1")


def test_ports_report_their_descriptor_limits_and_the_appliance_checks_them(tmp_path):
    # What check_port_descriptors reads: the PMD's own rte_eth_desc_lim.
    program = (
        "import json, sys\n"
        "from rplb import dataplane\n"
        "dataplane.eal_init(['x', *json.loads(sys.argv[1])])\n"
        "print(json.dumps([dataplane.Port(p).descriptor_limits for p in dataplane.port_ids()]))\n"
        "dataplane.eal_cleanup()\n")
    prefix = file_prefix()
    try:
        proc = subprocess.run([sys.executable, "-c", program,
                               json.dumps(eal_args(prefix, pcap_vdevs(tmp_path), "0"))],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
    finally:
        remove_runtime_dir(prefix)
    assert proc.returncode == 0, proc.stderr
    limits = json.loads(proc.stdout.splitlines()[-1])
    assert limits == [{"rx": {"min": 0, "max": 65535, "align": 1},
                       "tx": {"min": 0, "max": 65535, "align": 1}}] * 2
    # and the largest count rplb accepts is within them: it starts
    run = run_rplb(tmp_path, frames(0), rplb_args=["--descriptors", "32768", "--mbufs", "140000"],
                   extra_eal=["-m", "1024"])
    assert run.rc == 0, run.stderr


def test_control_socket_in_a_directory_that_does_not_exist_is_refused(tmp_path):
    directory = tmp_path / "nonexistent" / "dir"
    line = error_line(run_eal(tmp_path, pcap_vdevs(tmp_path), [
        "--control-socket", str(directory / "x.sock")]))
    assert f"the directory {directory} does not exist" in line
    assert "only the default /run/rplb is created" in line
    assert not (tmp_path / "nonexistent").exists()


@pytest.mark.parametrize("args", [["--list-drivers"], ["--help"],
                                  ["--check-config", "SERVICES"]],
                         ids=["list-drivers", "help", "check-config"])
def test_broken_pipe_on_stdout_is_a_quiet_exit(tmp_path, args):
    # `rplb-dpdk --list-drivers | head`, with a reader that is gone before
    # the first write: the read end is closed before rplb-dpdk starts.
    argv = [a.replace("SERVICES", str(EXAMPLE)) for a in args]
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([*RPLB, *argv], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=60, cwd=tmp_path)
    finally:
        os.close(write_end)
    assert proc.stderr == ""
    assert proc.returncode == 141          # 128 + SIGPIPE, as for a program it killed


def test_services_file_without_services_warns_once_and_passes_everything(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\nservices: []\n")
    run = run_rplb(tmp_path, frames(0), frames(1), rplb_args=["--config", str(empty)])
    assert run.rc == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if "has no service" in line]
    assert warnings == [f"rplb-dpdk: warning: {empty} has no service: every frame passes "
                        "through unchanged (add services, then SIGHUP, `rplbctl reload` or "
                        "`systemctl reload rplb`)"]
    assert run.backend_out == frames(0) and run.frontend_out == frames(1)
    assert run.counter("events", "passed_through") == 2 * len(frames(0))
