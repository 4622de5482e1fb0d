"""rplb-dpdk --check-config FILE (after nginx -t, haproxy -c): validates a
services file, prints its services, backends and the memory its tables and
flow table will take, exits 0 or 1, and never starts EAL."""

import os
from pathlib import Path

import pytest

from harness import file_prefix, remove_runtime_dir, run_cli

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "services.yaml"


def check(*args, prefix=None):
    """rplb-dpdk [EAL options] -- --check-config ...: EAL options are given
    (with a --file-prefix) to prove that EAL never ran: it would have
    created /var/run/dpdk/<prefix>."""
    prefix = prefix or file_prefix()
    try:
        # Two lcores: one worker, whatever the machine's CPUs.
        proc = run_cli(["--no-huge", "-l", "0-1", "--file-prefix", prefix, "--",
                        "--check-config", *args])
        assert not os.path.exists(f"/var/run/dpdk/{prefix}"), "EAL was started"
    finally:
        remove_runtime_dir(prefix)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "EAL" not in proc.stderr
    return proc


def test_valid_file_prints_services_backends_and_memory_from_the_c_sizes():
    from rplb import contract, dataplane, sizing
    proc = check(str(EXAMPLE))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines[0] == f"{EXAMPLE}: valid: 4 services, 9 backends (9 with weight > 0)"
    assert lines[1].split() == ["web", "10.0.0.100:tcp:80", "3", "backends,", "total", "weight",
                                "16,", "Maglev", "4099"]
    assert lines[2].split()[:3] == ["dns", "10.0.0.100:udp:53", "2"]
    assert lines[2].split()[-2:] == ["Maglev", "1009"]
    assert lines[3].split()[:3] == ["api", "10.0.0.101:tcp:443", "2"]
    assert lines[4].split() == ["web6", "[fd00::100]:tcp:80", "2", "backends,", "total",
                                "weight", "3,", "Maglev", "1009"]
    # the example: 4 services, 9 backends, Maglev 4099 (web's own) and 1009
    # three times (2 backends each), 65536 flows per worker
    tables = contract.tables_memory(4, 9)
    maglev = (contract.maglev_memory(4099, 3) + 3 * contract.maglev_memory(1009, 2))
    worker = dataplane.worker_memory(65536)
    assert maglev > (4099 + 3 * 1009) * 4   # the entries alone
    assert worker > 65536 * 32             # a 32-byte record per flow alone
    assert (f"lookup tables: {sizing.mebibytes(tables)} and Maglev tables "
            f"{sizing.mebibytes(maglev)}; at most {sizing.mebibytes(2 * (tables + maglev))} "
            "while a change is applied (tables_memory_mb 512)") in proc.stdout
    assert (f"flow table: {sizing.mebibytes(worker)} per worker lcore (65536 flows, 4096 "
            "fragmented datagrams, counters included) x 1 worker") in proc.stdout
    assert (f"load-balancer memory at most {sizing.mebibytes(2 * (tables + maglev) + worker)}"
            in proc.stdout)
    # the rings and bursts, and the 1,024 fragments the worker may hold
    assert "besides the pool of 16383 mbufs (5696 needed:" in proc.stdout
    assert "+ 1024 fragments held) = 5696" in proc.stdout


def test_memory_follows_the_file(tmp_path):
    from rplb import dataplane, sizing
    big = tmp_path / "big.yaml"
    big.write_text("flow_table_size: 1048576\nmaglev_table_size: 251\n"
                   "fragments: {datagrams: 65536, held: 2048}\nservices:\n"
                   "  - {vip: 10.0.0.1, proto: udp, port: 53, backends: [{ip: 10.1.0.1, port: 53}]}\n")
    proc = check(str(big))
    assert proc.returncode == 0, proc.stderr
    from rplb.config import Fragments
    fragments = Fragments(datagrams=65536, held=2048)
    worker = dataplane.worker_memory(1 << 20, fragments)
    # The flow table and the fragment state grow with the file (a 32-byte
    # record per flow, a 64-byte one per datagram, at least); the counters
    # (one per service and backend slot) do not.
    assert worker - dataplane.worker_memory(65536, fragments) > ((1 << 20) - 65536) * 32
    assert worker - dataplane.worker_memory(1 << 20) > (65536 - 4096) * 64
    assert (f"flow table: {sizing.mebibytes(worker)} per worker lcore (1048576 flows, 65536 "
            "fragmented datagrams") in proc.stdout
    assert "+ 2048 fragments held)" in proc.stdout
    assert proc.stdout.splitlines()[1].split()[-2:] == ["Maglev", "251"]


@pytest.mark.parametrize("text, problem", [
    ("services:\n  - vip: 10.0.0.100\n    port: 80\n", "proto"),
    ("maglev_table_size: 100\nservices: []\n", "maglev_table_size"),
    ("services: [\n", "invalid YAML"),
], ids=["missing-proto", "maglev-not-prime", "yaml-syntax"])
def test_invalid_file_is_one_error_line_and_exit_1(tmp_path, text, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    proc = check(str(path))
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rplb-dpdk: error: "), proc.stderr
    assert str(path) in lines[0] and problem in lines[0]


def test_missing_file_is_named(tmp_path):
    proc = check(str(tmp_path / "nowhere.yaml"))
    assert proc.returncode == 1 and "cannot read file" in proc.stderr


def test_file_without_services_is_valid_with_a_warning(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    proc = check(str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{path}: valid: 0 services, 0 backends")
    assert proc.stderr == (f"rplb-dpdk: warning: {path} has no service: every frame passes "
                           "through unchanged (add services, then SIGHUP, `rplbctl reload` or "
                           "`systemctl reload rplb`)\n")


def test_options_given_with_it_are_checked_too():
    proc = check(str(EXAMPLE), "--mbufs", "1000", "--ports", "0,1")
    assert proc.returncode == 1
    assert "rplb-dpdk: error: --mbufs 1000 is too few" in proc.stderr
    # 2 ports x (2048 rx + 2048 tx), 3 bursts of 64, the cache's 384 and
    # the 1,024 fragments the worker may hold
    assert check(str(EXAMPLE), "--mbufs", "9792", "--descriptors", "2048").returncode == 0
    assert check(str(EXAMPLE), "--mbufs", "9791", "--descriptors", "2048").returncode == 1


def test_without_a_file_it_checks_the_config_option():
    prefix = file_prefix()
    try:
        proc = run_cli(["--no-huge", "--file-prefix", prefix, "--", "--config", str(EXAMPLE),
                        "--check-config"])
    finally:
        remove_runtime_dir(prefix)
    assert proc.returncode == 0 and proc.stdout.startswith(f"{EXAMPLE}: valid")
    proc = run_cli(["--check-config"])
    assert proc.returncode == 1
    assert proc.stderr == "rplb-dpdk: error: --check-config: which file? give --check-config FILE\n"
