"""rplb-dpdk's command line: every bad input gets one `rplb-dpdk: error:` line,
a non-zero exit and no traceback; SIGINT/SIGTERM and --duration stop cleanly.

Each case runs the real CLI in its own process (EAL initialises once per
process) with its own --file-prefix, whose runtime directory is removed.
"""

import os
import signal
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from harness import (LiveRplb, eal_args, file_prefix, read_pcap, remove_runtime_dir, run_cli,
                     run_rplb, write_pcap)

ERROR = "rplb-dpdk: error:"


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
