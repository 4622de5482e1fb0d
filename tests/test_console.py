"""rplb-dpdk's stdout and stderr while it runs (rplb/console.py): a reader
that stops reading never blocks the control plane; stdout that goes away
stops the statistics, not rplb; under systemd, lines carry journald's
priorities and rplb tells systemd when it is ready, reloading, stopping.
"""

import fcntl
import os
import signal
import socket
import subprocess
import termios
import threading
import time
from pathlib import Path

import pytest

from harness import RPLB, LiveRplb, eal_args, file_prefix, remove_runtime_dir, write_pcap

F_SETPIPE_SZ = 1031          # fcntl.F_SETPIPE_SZ (Python >= 3.10)
SERVICES = """\
maglev_table_size: 251
services:
  - name: web
    vip: 10.0.0.100
    proto: tcp
    port: 80
    backends:
      - {ip: 192.168.1.10, port: 8080, weight: 1}
      - {ip: 192.168.1.11, port: 8080, weight: 1}
"""


def argv_for(tmp_path: Path, prefix: str, *rplb_args, config_text=SERVICES):
    config = tmp_path / "services.yaml"
    config.write_text(config_text)
    vdevs = [f"net_pcap0,rx_pcap={write_pcap(tmp_path / 'in0.pcap', [])},"
             f"tx_pcap={tmp_path / 'out0.pcap'}",
             f"net_pcap1,rx_pcap={write_pcap(tmp_path / 'in1.pcap', [])},"
             f"tx_pcap={tmp_path / 'out1.pcap'}"]
    return [*eal_args(prefix, vdevs), "--", "--config", str(config),
            "--control-socket", str(tmp_path / "rplb.sock"), *rplb_args]


def wait_until_answering(sock: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    from rplb.control import ControlError, request
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"rplb-dpdk exited with {proc.returncode}"
        try:
            if request(sock, {"cmd": "status"}, timeout=5).get("ok"):
                return
        except ControlError:
            pass
        time.sleep(0.05)
    raise AssertionError("rplb-dpdk never answered on its control socket")


def unread_bytes(fd: int) -> int:
    return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), "little")


def test_a_stderr_nobody_reads_never_blocks_control_requests(tmp_path):
    from rplb.control import request
    prefix = file_prefix()
    sock = str(tmp_path / "rplb.sock")
    proc = subprocess.Popen([*RPLB, *argv_for(tmp_path, prefix)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, cwd=tmp_path)
    stderr_fd = proc.stderr.fileno()
    # One page instead of 64 KiB: the pipe fills after a few dozen lines.
    pipe_size = fcntl.fcntl(stderr_fd, F_SETPIPE_SZ, 4096)
    drained, stopped = [], False
    try:
        wait_until_answering(sock, proc)
        # Each change logs a line on stderr; 2,500 of them are far more than
        # the pipe holds, and more than rplb-dpdk keeps waiting for it
        # (console.DEFAULT_CAPACITY).  Nobody reads: every request must still
        # be answered at once.
        from rplb.console import DEFAULT_CAPACITY
        for i in range(DEFAULT_CAPACITY + 500):
            started = time.monotonic()
            reply = request(sock, {"cmd": "backend.set-weight", "service": "web",
                                   "ip": "192.168.1.10", "port": 8080, "weight": 1 + i % 7},
                            timeout=10)
            assert reply["ok"], reply
            assert time.monotonic() - started < 5
        assert unread_bytes(stderr_fd) >= pipe_size - 512, "stderr never filled up"
        status = request(sock, {"cmd": "status"}, timeout=10)
        assert status["ok"] and status["services"] == 1
        # Now read: what was queued comes out, then the drop is reported,
        # and rplb-dpdk stops cleanly.
        reader = threading.Thread(target=lambda: drained.extend(proc.stderr), daemon=True)
        reader.start()
        deadline = time.monotonic() + 30
        while not any(b"were dropped" in line for line in drained):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        stopped = True
        reader.join(30)
    finally:
        if not stopped:
            proc.kill()
            proc.wait()
        remove_runtime_dir(prefix)
    stderr = b"".join(drained).decode()
    assert "Traceback" not in stderr
    dropped = [line for line in stderr.splitlines() if "were dropped" in line]
    assert len(dropped) == 1 and dropped[0].startswith("rplb-dpdk: warning: ")
    assert "lines of stderr were dropped: nobody read stderr" in dropped[0]
    assert "SIGINT: stopping" in stderr


def test_stdout_that_goes_away_stops_the_statistics_not_rplb(tmp_path):
    from rplb.control import request
    prefix = file_prefix()
    sock = str(tmp_path / "rplb.sock")
    proc = subprocess.Popen([*RPLB, *argv_for(tmp_path, prefix, "--stats-period", "0.05")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    proc.stdout.close()                 # the reader of the statistics is gone
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        wait_until_answering(sock, proc)
        deadline = time.monotonic() + 20
        while not any("statistics are no longer printed" in line for line in lines):
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)
        assert request(sock, {"cmd": "status"}, timeout=10)["ok"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        remove_runtime_dir(prefix)
    reader.join(10)
    notes = [line for line in lines if "stdout:" in line]
    assert notes == ["rplb-dpdk: warning: stdout: its reader went away (broken pipe): "
                     "statistics are no longer printed\n"]
    assert not any("Traceback" in line for line in lines)


def test_under_journald_lines_carry_their_priority(tmp_path):
    read_end, write_end = os.pipe()
    st = os.fstat(write_end)
    env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    prefix = file_prefix()
    argv = argv_for(tmp_path, prefix, "--duration", "0.2", config_text="services: []\n")
    argv[argv.index("--log-level=*:warning")] = "--log-level=*:info"
    try:
        proc = subprocess.Popen([*RPLB, *argv], stdout=subprocess.DEVNULL, stderr=write_end,
                                env=env, cwd=tmp_path)
        os.close(write_end)
        with os.fdopen(read_end) as stream:
            lines = stream.read().splitlines()
        assert proc.wait(timeout=60) == 0, lines
    finally:
        remove_runtime_dir(prefix)
    assert all(line[:3] in {f"<{n}>" for n in range(8)} for line in lines), lines
    assert any(line.startswith("<6>rplb-dpdk: forwarding with") for line in lines)
    assert any(line.startswith("<4>rplb-dpdk: warning: ") and "has no service" in line
               for line in lines)
    # DPDK's own messages, with their own levels, came the same way (once).
    detected = [line for line in lines if "EAL: Detected CPU lcores" in line]
    assert len(detected) == 1 and detected[0].startswith("<6>"), lines


def test_errors_under_journald_are_priority_3(tmp_path):
    read_end, write_end = os.pipe()
    st = os.fstat(write_end)
    env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    prefix = file_prefix()
    argv = argv_for(tmp_path, prefix)
    argv[argv.index("--config") + 1] = str(tmp_path / "missing.yaml")
    try:
        proc = subprocess.Popen([*RPLB, *argv], stdout=subprocess.DEVNULL, stderr=write_end,
                                env=env, cwd=tmp_path)
        os.close(write_end)
        with os.fdopen(read_end) as stream:
            lines = stream.read().splitlines()
        assert proc.wait(timeout=60) == 1
    finally:
        remove_runtime_dir(prefix)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"<3>rplb-dpdk: error: {tmp_path / 'missing.yaml'}")


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()


def test_systemd_is_told_ready_reloading_and_stopping(tmp_path, notify_socket):
    prefix = file_prefix()
    live = LiveRplb(argv_for(tmp_path, prefix), prefix, cwd=tmp_path)
    try:
        live.wait_for_stderr("forwarding with")
        ready = notify_socket.recv(4096).decode().splitlines()
        assert ready == ["READY=1", "STATUS=forwarding (lb engine, 1 service)"]
        live.signal(signal.SIGHUP)
        assert notify_socket.recv(4096) == b"RELOADING=1"
        assert notify_socket.recv(4096).decode().splitlines()[0] == "READY=1"
        live.wait_for_stderr("SIGHUP: reloaded")
        live.signal(signal.SIGTERM)
        assert notify_socket.recv(4096) == b"STOPPING=1"
    finally:
        rc, _ = live.stop()
    assert rc == 0, live.stderr_lines
