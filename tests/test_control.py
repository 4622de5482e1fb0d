"""The control socket and rplbctl against a running rplb-dpdk.

Each test starts the real CLI in its own process (pcap vdevs, or net_tap
ports through TapWire when traffic must flow during a change) with its own
--control-socket under tmp_path, and drives it with rplbctl (a subprocess,
as an operator would) or with raw requests on the socket.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from harness import LiveRplb, eal_args, file_prefix, remove_runtime_dir, run_cli, write_pcap
from lbcheck import by_flow
from rplb import ctl
from rplb.config import Backend, load_config
from rplb.control import MAX_REQUEST, request
from tapwire import TapWire, client_segments, from_test_clients

VIP = "10.0.0.100"
B1, B2, B3 = "192.168.1.10", "192.168.1.11", "192.168.1.12"
CTL = [sys.executable, "-m", "rplb.ctl"]
NOT_SAVED = "not saved: rplbctl save to keep it"


def config_dict(web_backends=((B1, 1), (B2, 1))):
    # tcp_syn: flows that only sent a SYN must not expire between the
    # phases of a test on a slow machine.
    return {"flow_table_size": 4096, "maglev_table_size": 65537,
            "timeouts": {"tcp_syn": 300}, "services": [
                {"name": "web", "vip": VIP, "proto": "tcp", "port": 80,
                 "backends": [{"ip": ip, "port": 8080, "weight": w} for ip, w in web_backends]},
                {"name": "dns", "vip": VIP, "proto": "udp", "port": 53,
                 "backends": [{"ip": "192.168.2.20", "port": 5353, "weight": 1}]}]}


def write_config(path: Path, data=None) -> Path:
    path.write_text(yaml.safe_dump(config_dict() if data is None else data))
    return path


def rplbctl(argv, cwd) -> subprocess.CompletedProcess:
    """rplbctl's main() in this process (a subprocess per call costs about 0.5 s
    here, mostly the editable install's rebuild check): exit status and output."""
    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = ctl.main(argv)
            except SystemExit as exit:        # argparse's usage errors
                rc = exit.code
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(argv, rc, out.getvalue(), err.getvalue())


class Daemon:
    """rplb-dpdk on two pcap ports with a control socket; stop() checks a clean exit."""

    def __init__(self, tmp_path: Path, config=True, frontend_in=(), socket_path=None,
                 extra=()):
        self.tmp = tmp_path
        if socket_path is None:
            # Only the default /run/rplb is created by rplb-dpdk itself.
            (tmp_path / "run").mkdir(mode=0o700, exist_ok=True)
        self.socket = str(socket_path or tmp_path / "run" / "rplb.sock")
        self.config = write_config(tmp_path / "services.yaml") if config else None
        self.stats_path = tmp_path / "stats.json"
        fin = write_pcap(tmp_path / "fin.pcap", frontend_in)
        bin_ = write_pcap(tmp_path / "bin.pcap", [])
        self.prefix = file_prefix()
        argv = [*eal_args(self.prefix, [
                    f"net_pcap0,rx_pcap={fin},tx_pcap={tmp_path / 'fout.pcap'}",
                    f"net_pcap1,rx_pcap={bin_},tx_pcap={tmp_path / 'bout.pcap'}"]),
                "--", "--control-socket", self.socket, "--stats-json", str(self.stats_path),
                *(["--config", str(self.config)] if config else []), *extra]
        self.live = LiveRplb(argv, self.prefix, cwd=tmp_path)
        try:
            self.live.wait_for_stderr("forwarding with")
        except BaseException:
            self.live.stop()
            raise

    def ctl(self, *args, cwd=None, process=False) -> subprocess.CompletedProcess:
        argv = ["--socket", self.socket, *args]
        if process:
            return subprocess.run([*CTL, *argv], capture_output=True, text=True, timeout=60,
                                  cwd=cwd or self.tmp)
        return rplbctl(argv, cwd=cwd or self.tmp)

    def ok(self, *args, cwd=None, process=False) -> subprocess.CompletedProcess:
        proc = self.ctl(*args, cwd=cwd, process=process)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
        return proc

    def fails(self, *args, process=False) -> str:
        """The one error line of a refused rplbctl command."""
        proc = self.ctl(*args, process=process)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("rplbctl: error: "), proc.stderr
        return lines[0]

    def json(self, *args) -> dict:
        return json.loads(self.ok(*args, "--json").stdout)

    def request(self, req: dict) -> dict:
        return request(self.socket, req, timeout=30)

    def services(self) -> list:
        """The running services in the file format (counters, keys and
        run-time states left out)."""
        reply = self.request({"cmd": "service.list"})
        assert reply["ok"], reply
        out = []
        for svc in reply["services"]:
            svc = {k: v for k, v in svc.items() if k not in ("counters", "key", "failing_open")}
            svc["backends"] = [{k: v for k, v in b.items() if k not in ("counters", "state")}
                               for b in svc["backends"]]
            out.append(svc)
        return out

    def stop(self):
        rc, out = self.live.stop()              # SIGINT

        stderr = "\n".join(self.live.stderr_lines)
        assert "Traceback" not in stderr, stderr
        assert rc == 0, stderr
        self.stats = json.loads(self.stats_path.read_text())
        assert self.stats["mbufs_in_use_at_exit"] == 0
        return stderr


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    yield d
    if d.live.proc.poll() is None:
        d.stop()
    assert not os.path.exists(d.socket), "the socket file outlived rplb-dpdk"


def file_services(path) -> list:
    return load_config(path).to_dict()["services"]


# ---- reading -------------------------------------------------------------------

def test_status(daemon):
    status = daemon.json("status")
    assert status["ok"] and status["pid"] == daemon.live.proc.pid
    assert status["engine"] == "lb" and status["lcores"] == [1]
    assert [p["role"] for p in status["ports"]] == ["frontend", "backend"]
    assert (status["services"], status["backends"], status["flows"]) == (2, 3, 0)
    assert status["config_file"] == str(daemon.config) and status["saved"] is True
    assert status["control_socket"] == daemon.socket
    text = daemon.ok("status", process=True).stdout        # as an operator runs it
    assert f"pid {daemon.live.proc.pid}" in text and "lb engine on lcore 1" in text
    assert "services 2, backends 3, flows 0" in text
    assert "frontend port 0 (net_pcap0" in text and "is saved" in text


def test_service_list(daemon):
    assert daemon.services() == file_services(daemon.config)
    listed = daemon.json("service", "list")["services"]
    assert [s["key"] for s in listed] == [f"{VIP}:tcp:80", f"{VIP}:udp:53"]
    assert listed[0]["counters"] == {"packets": 0, "bytes": 0, "new_flows": 0, "active_flows": 0}
    lines = daemon.ok("service", "list").stdout.splitlines()
    assert lines[0].split()[0] == "Prot"
    assert lines[1].split()[:3] == ["TCP", f"{VIP}:80", "web"]
    assert lines[2].split()[:3] == ["->", f"{B1}:8080", "1"]
    assert lines[4].split()[:3] == ["UDP", f"{VIP}:53", "dns"]


# ---- changes ------------------------------------------------------------------

def test_service_add_and_del(daemon):
    before = file_services(daemon.config)
    proc = daemon.ok("service", "add", "10.0.0.102:tcp:80", "--name", "web2",
                     "--backend", "192.168.1.20:8080:5", "--backend", "192.168.1.21:8080")
    assert "added service web2 (10.0.0.102:tcp:80) with 2 backends" in proc.stdout
    assert NOT_SAVED in proc.stderr and str(daemon.config) in proc.stderr
    web2 = {"name": "web2", "vip": "10.0.0.102", "proto": "tcp", "port": 80,
            "backends": [{"ip": "192.168.1.20", "port": 8080, "weight": 5},
                         {"ip": "192.168.1.21", "port": 8080, "weight": 1}]}
    assert daemon.services() == before + [web2]
    assert daemon.json("status")["saved"] is False
    # Unnamed, without backends, removed by its key.
    daemon.ok("service", "add", "10.0.0.103:udp:5000")
    assert daemon.services()[-1] == {"vip": "10.0.0.103", "proto": "udp", "port": 5000,
                                     "backends": []}
    assert "removed service 10.0.0.103:udp:5000" in daemon.ok(
        "service", "del", "10.0.0.103:udp:5000").stdout
    proc = daemon.ok("service", "del", "web2")
    assert "removed service web2" in proc.stdout
    assert daemon.services() == before
    # Back to what the file says: nothing left unsaved, no note.
    assert NOT_SAVED not in proc.stderr
    assert daemon.json("status")["saved"] is True
    assert file_services(daemon.config) == before            # the file was never touched
    stderr = daemon.stop()
    assert "control: added service web2" in stderr and "control: removed service web2" in stderr


def test_backend_add_del_set_weight(daemon):
    proc = daemon.ok("backend", "add", "web", "192.168.1.13:8080", "--weight", "5")
    assert "added backend 192.168.1.13:8080 (weight 5) to web" in proc.stdout
    assert NOT_SAVED in proc.stderr
    web = daemon.services()[0]
    assert web["backends"][-1] == {"ip": "192.168.1.13", "port": 8080, "weight": 5}
    proc = daemon.ok("backend", "set-weight", "web", f"{B2}:8080", "0")
    assert f"backend {B2}:8080 weight 1 -> 0" in proc.stdout and "draining" in proc.stdout
    assert daemon.services()[0]["backends"][1] == {"ip": B2, "port": 8080, "weight": 0}
    assert "(drain)" in daemon.ok("service", "list").stdout
    # The service named by its key works as well as by its name.
    daemon.ok("backend", "del", f"{VIP}:tcp:80", "192.168.1.13:8080")
    assert [b["ip"] for b in daemon.services()[0]["backends"]] == [B1, B2]
    daemon.ok("backend", "add", "dns", "192.168.2.21:5353")       # weight defaults to 1
    assert daemon.services()[1]["backends"][-1] == {"ip": "192.168.2.21", "port": 5353,
                                                    "weight": 1}


INVALID = [
    (["backend", "add", "nope", "192.168.1.13:8080"], "backend add: no service named 'nope'"),
    (["backend", "add", "web", f"{B1}:8080"],
     f"backends[2]: duplicate backend {B1}:8080, already at backends[0]"),
    (["backend", "add", "web", "192.168.1.300:8080"],
     "backends[2].ip: '192.168.1.300' is not a valid IPv4 address"),
    (["backend", "add", "web", "224.0.0.1:8080"], "224.0.0.1 is a multicast address"),
    (["backend", "add", "web", "192.168.1.13:70000"], "backends[2].port: 70000 is outside 1-65535"),
    (["backend", "set-weight", "web", f"{B1}:8080", "70000"],
     "backend set-weight: services[0] (web): backends[0].weight: 70000 is outside 0-65535"),
    (["backend", "add", "web", "192.168.1.13:8080", "--weight", "-1"],
     "backends[2].weight: -1 is outside 0-65535"),
    (["backend", "set-weight", "web", "192.168.1.99:8080", "3"], "no backend 192.168.1.99:8080"),
    (["backend", "del", "web", "192.168.1.99:8080"], "no backend 192.168.1.99:8080"),
    (["backend", "del", "nope", f"{B1}:8080"], "no service named 'nope'"),
    (["service", "del", "nope"], "service del: no service named 'nope'"),
    (["service", "del", "10.9.9.9:tcp:80"], "no service 10.9.9.9:tcp:80"),
    (["service", "add", f"{VIP}:tcp:80"], "duplicate service, already defined at services[0] (web)"),
    (["service", "add", "10.0.0.102:tcp:80", "--name", "dns"], "duplicate name 'dns'"),
    (["service", "add", "10.0.0.102:sctp:80"], "unknown protocol 'sctp' (expected tcp or udp)"),
    (["service", "add", "10.0.0.300:tcp:80"], "'10.0.0.300' is not a valid IPv4 address"),
    (["service", "add", "10.0.0.102:tcp:80", "--name", "bad name"],
     "may contain only letters, digits"),
    (["service", "add", "10.0.0.102:tcp:80", "--backend", "192.168.1.20:8080:70000"],
     "backends[0].weight: 70000 is outside 0-65535"),
    (["service", "add", "10.0.0.102:tcp"], "expected VIP:PROTO:PORT"),           # client side
    (["backend", "add", "web", "192.168.1.13"], "expected IP:PORT"),             # client side
    (["backend", "add", "web", "192.168.1.13:http"], "port 'http' is not an integer"),
]


def test_invalid_changes_are_refused_and_change_nothing(daemon):
    before = daemon.services()
    for i, (args, message) in enumerate(INVALID):
        line = daemon.fails(*args, process=i < 2)
        assert message in line, (args, line)
        assert daemon.services() == before, args
    assert daemon.json("status")["saved"] is True
    stderr = daemon.stop()
    assert "control:" not in stderr            # no change was ever applied


RAW_INVALID = [
    (b'{"cmd": "status"', "request is not valid JSON"),
    (b'not json at all', "request is not valid JSON at column 1"),
    (b'["status"]', "request must be a JSON object, got a list"),
    (b'{"command": "status"}', 'request has no "cmd"'),
    (b'{"cmd": 7}', '"cmd" must be a string, got integer'),
    (b'{"cmd": "service.rename"}', "unknown command 'service.rename' (commands: status,"),
    (b'{"cmd": "backend.add", "service": "web", "ip": "192.168.1.13"}',
     "backend add: missing field 'port'"),
    (b'{"cmd": "backend.add", "service": "web", "ip": "192.168.1.13", "port": "8080"}',
     "backend add: field 'port' must be an integer, got string '8080'"),
    (b'{"cmd": "backend.add", "service": "web", "ip": "192.168.1.13", "port": 8080, '
     b'"weight": true}', "field 'weight' must be an integer, got true"),
    (b'{"cmd": "backend.add", "service": "web", "ip": "192.168.1.13", "port": 8080.0}',
     "field 'port' must be an integer, got number"),
    (b'{"cmd": "backend.del", "service": ["web"], "ip": "1.2.3.4", "port": 1}',
     "field 'service' must be a string, got a list"),
    (b'{"cmd": "status", "verbose": true}', "status: unknown field 'verbose' (fields: none)"),
    (b'{"cmd": "service.add", "service": {"vip": "10.0.0.9", "proto": "tcp"}}',
     "service add: services[2] (10.0.0.9:tcp:?): port: missing required key"),
    (b'{"cmd": "service.add", "service": {"vip": "10.0.0.9", "proto": "tcp", "port": 1, '
     b'"colour": "red"}}', "colour: unknown key"),
    (b'{"cmd": "save", "path": "relative.yaml"}', "must be absolute"),
    (b'\xff\xfe{"cmd": "status"}', "request is not valid UTF-8"),
    (b'[' * 100000, "request too large"),
    (b'{"cmd": "status", "pad": "' + b"x" * (MAX_REQUEST + 10) + b'"}',
     f"request too large: over {MAX_REQUEST} bytes"),
]


def exchange(path: str, data: bytes, timeout: float = 10.0) -> list:
    """Send raw bytes, half-close, and return every reply line (decoded)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except BrokenPipeError:
            pass
        received = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            received += chunk
    return [json.loads(line) for line in received.splitlines()]


def test_bad_requests_get_one_clear_error_and_change_nothing(daemon):
    before = daemon.services()
    for data, message in RAW_INVALID:
        replies = exchange(daemon.socket, data + b"\n")
        assert len(replies) == 1, (data[:60], replies)
        assert replies[0]["ok"] is False and message in replies[0]["error"], (data[:60], replies)
        assert "\n" not in replies[0]["error"]
        assert daemon.services() == before
    assert daemon.request({"cmd": "status"})["ok"]


def test_connection_survives_clients_that_misbehave(daemon):
    path = daemon.socket
    # Several requests on one connection, answered in order; empty lines skipped.
    replies = exchange(path, b'{"cmd": "status"}\n\n{"cmd": "bogus"}\r\n{"cmd": "flows"}')
    assert [r["ok"] for r in replies] == [True, False, True]
    assert "flows" in replies[2]
    # Clients that go away: before sending, mid-request, mid-oversized
    # request, and right after a request without reading the reply.
    for data in (b"", b'{"cmd": "backend.add", "serv', b"x" * 200000,
                 b'{"cmd": "service.list"}\n' * 50):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)
            try:
                s.sendall(data)
            except OSError:
                pass
    # A client that connects and says nothing does not block the others.
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(path)
    try:
        assert daemon.request({"cmd": "status"})["ok"]
        assert daemon.ok("service", "list").stdout.startswith("Prot")
    finally:
        idle.close()
    assert daemon.services() == file_services(daemon.config)


def test_save_round_trips(daemon, tmp_path):
    expected = (load_config(daemon.config)
                .with_backend("web", Backend(B3, 8080, 7))
                .with_weight("web", B1, 8080, 0)
                .without_service("dns"))
    daemon.ok("backend", "add", "web", f"{B3}:8080", "--weight", "7")
    daemon.ok("backend", "set-weight", "web", f"{B1}:8080", "0")
    daemon.ok("service", "del", "dns")
    # A relative FILE is rplbctl's, not rplb-dpdk's.
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    proc = daemon.ok("save", "copy.yaml", cwd=workdir)
    assert f"to {workdir / 'copy.yaml'}" in proc.stdout
    assert load_config(workdir / "copy.yaml") == expected
    # Saved elsewhere: the --config file still differs.
    assert NOT_SAVED in proc.stderr and daemon.json("status")["saved"] is False
    # Without FILE: the --config file, its mode kept; then nothing is unsaved.
    os.chmod(daemon.config, 0o640)
    proc = daemon.ok("save")
    assert str(daemon.config) in proc.stdout and NOT_SAVED not in proc.stderr
    assert load_config(daemon.config) == expected
    assert stat.S_IMODE(os.stat(daemon.config).st_mode) == 0o640
    assert daemon.json("status")["saved"] is True
    assert daemon.services() == expected.to_dict()["services"]
    # A reload of the saved file changes nothing.
    daemon.ok("reload")
    assert daemon.services() == expected.to_dict()["services"]
    assert "cannot write" in daemon.fails("save", str(tmp_path / "missing" / "x.yaml"))
    assert not list(daemon.config.parent.glob(".*.tmp"))


def test_reload_and_sighup_replace_unsaved_changes(daemon):
    daemon.ok("backend", "add", "web", f"{B3}:8080")
    assert any(b["ip"] == B3 for b in daemon.services()[0]["backends"])
    # reload: the file wins, the rplbctl change is gone.
    proc = daemon.ok("reload")
    assert f"reloaded {daemon.config}: 2 services" in proc.stdout
    assert daemon.services() == file_services(daemon.config)
    # A new file is applied by reload ...
    write_config(daemon.config, config_dict([(B1, 2), (B3, 1)]))
    daemon.ok("reload")
    assert daemon.services() == file_services(daemon.config)
    # ... a broken one is refused and the running configuration keeps serving.
    good = daemon.services()
    daemon.config.write_text("services: [ {vip: 10.0.0.100, proto: tcp, port: 99999} ]")
    line = daemon.fails("reload")
    assert "reload failed, the running configuration keeps serving" in line
    assert "99999 is outside 1-65535" in line
    assert daemon.services() == good
    # SIGHUP does the same as reload: an unsaved change is dropped.
    write_config(daemon.config, config_dict([(B2, 4)]))
    daemon.ok("backend", "add", "web", "192.168.1.14:8080")
    daemon.live.signal(signal.SIGHUP)
    assert "reloaded" in daemon.live.wait_for_stderr("SIGHUP")
    assert daemon.services() == file_services(daemon.config)
    assert daemon.json("status")["saved"] is True


def client_frames(count: int):
    return [Ether(src="02:00:00:00:00:c1", dst="02:00:00:00:00:1b")
            / IP(src=f"100.64.0.{i + 1}", dst=VIP) / TCP(sport=5000 + i, dport=80, flags="S")
            / Raw(b"hello") for i in range(count)] + [
        Ether() / IP(src="100.64.1.1", dst=VIP) / UDP(sport=4000, dport=53) / Raw(b"q")]


def wait_until_all_forwarded(d: Daemon, count: int, timeout: float = 20.0) -> dict:
    """Until all count frames of the rx pcap went out of the backend port:
    then the counters are final (nothing else arrives)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = d.request({"cmd": "stats"})["stats"]
        if stats["port"][0]["rx_packets"] == count and stats["port"][1]["tx_packets"] == count:
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(f"rplb did not forward {count} frames: {stats['port']}")
        time.sleep(0.05)


def test_stats_json_and_flows_match_the_final_statistics(tmp_path):
    d = Daemon(tmp_path, frontend_in=client_frames(20))
    try:
        wait_until_all_forwarded(d, 21)
        live = json.loads(d.ok("stats", "--json").stdout)
        flows = d.json("flows")
        text = d.ok("flows").stdout
        stats_text = d.ok("stats").stdout
    finally:
        d.stop()
    final = d.stats
    assert live["services"] == final["services"]
    assert live["services"][0]["packets"] == 20 and live["services"][1]["packets"] == 1
    assert live["drops"] == final["drops"] and live["events"] == final["events"]
    assert live["port"] == final["port"]
    assert flows["flows"] == 21 and flows["flows_created"] == 21
    assert [s["active_flows"] for s in flows["services"]] == [20, 1]
    # The sample: every flow (21 < 256), with client, service, backend, state, idle.
    sample = flows["sample"]
    assert len(sample) == 21
    web = [f for f in sample if f["service"] == "web"]
    assert sorted(f["client"] for f in web) == sorted(f"100.64.0.{i + 1}:{5000 + i}"
                                                      for i in range(20))
    assert all(f["state"] == "tcp_syn" and 0 <= f["idle_s"] < 60 for f in web)
    assert {f["backend"].rsplit(":", 1)[1] for f in web} == {"8080"}
    assert [f["state"] for f in sample if f["service"] == "dns"] == ["udp"]
    assert text.startswith("flows: 21 ") and "100.64.0.1:5000 -> web -> " in text
    assert "NIC statistics for port 0" in stats_text and "service web" in stats_text


# ---- the socket itself -----------------------------------------------------------

def test_socket_mode_and_ownership(daemon):
    st = os.stat(daemon.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())
    assert "control socket " + daemon.socket in "\n".join(daemon.live.stderr_lines)


def _connect_as(uid: int, path: str):
    """In a forked child running as uid: 'EACCES', or the reply to a status request."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:                                      # the child: never returns
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                os.stat(path)                           # the path itself is reachable
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(10)
                    s.connect(path)
                    try:
                        s.sendall(b'{"cmd": "service.del", "service": "web"}\n')
                    except BrokenPipeError:
                        pass                    # refused before the request was sent
                    result = s.recv(65536).decode() or "EOF"
            except OSError as err:
                result = errno.errorcode.get(err.errno, str(err))
            os.write(write_fd, result.encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        result = f.read().decode()
    os.waitpid(pid, 0)
    return result


def test_other_users_are_refused(tmp_path):
    # A directory every user may traverse, so that only the socket's own
    # mode (and then the server's credential check) can refuse them.
    directory = tempfile.mkdtemp(prefix="rplbctl-", dir="/tmp")
    os.chmod(directory, 0o755)
    path = os.path.join(directory, "rplb.sock")
    d = Daemon(tmp_path, socket_path=path)
    try:
        assert _connect_as(65534, path) == "EACCES"
        # Even with the mode opened by hand, the server refuses the uid.
        os.chmod(path, 0o666)
        reply = json.loads(_connect_as(65534, path))
        assert reply["ok"] is False and "permission denied: uid 65534" in reply["error"]
        assert [s["name"] for s in d.services()] == ["web", "dns"]
        assert d.request({"cmd": "status"})["ok"]          # the owner still gets in
    finally:
        d.stop()
        os.rmdir(directory)


def test_live_socket_is_not_stolen_stale_one_is_replaced(tmp_path):
    path = str(tmp_path / "rplb.sock")
    # A stale socket: bound by a process that is gone (nobody listens).
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()
    d = Daemon(tmp_path, socket_path=path)
    try:
        assert d.request({"cmd": "status"})["pid"] == d.live.proc.pid
        # A second rplb-dpdk on the same path fails at once (before EAL).
        prefix = file_prefix()
        try:
            proc = run_cli([*eal_args(prefix, ["net_null0,no-rx=1", "net_null1,no-rx=1"]), "--",
                            "--control-socket", path, "--duration", "5"], timeout=30)
        finally:
            remove_runtime_dir(prefix)
        assert proc.returncode == 1, proc.stderr
        errors = [l for l in proc.stderr.splitlines() if l.startswith("rplb-dpdk: error:")]
        assert len(errors) == 1, proc.stderr
        assert f"--control-socket {path}: another rplb-dpdk is running" in errors[0]
        assert f"(pid {d.live.proc.pid})" in errors[0]
        assert "EAL" not in proc.stderr
        assert d.request({"cmd": "status"})["ok"]           # the first one keeps it
    finally:
        d.stop()
    assert not os.path.exists(path)


def test_socket_path_that_is_not_a_socket_is_left_alone(tmp_path):
    path = tmp_path / "important.txt"
    path.write_text("keep me")
    proc = run_cli(["--control-socket", str(path), "--duration", "1"], timeout=30)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "exists and is not a socket" in proc.stderr
    assert path.read_text() == "keep me"


def test_control_socket_none_and_pass_through(tmp_path):
    # Pass-through (no --config): status works, configuration commands explain.
    d = Daemon(tmp_path, config=False)
    try:
        status = d.json("status")
        assert status["engine"] == "fwd" and status["services"] is None
        assert "load balancing off" in d.ok("status").stdout
        line = d.fails("backend", "add", "web", f"{B1}:8080")
        assert "load balancing is off" in line and "--config" in line
        assert "no --config to reload" in d.fails("reload")
        assert "load balancing is off" in d.fails("save")
    finally:
        d.stop()
    # --control-socket none: no socket, nothing said about one.
    prefix = file_prefix()
    live = LiveRplb([*eal_args(prefix, ["net_null0,no-rx=1", "net_null1,no-rx=1"]), "--",
                     "--control-socket", "none"], prefix, cwd=tmp_path)
    try:
        live.wait_for_stderr("forwarding with")
    finally:
        rc, _ = live.stop()
    assert rc == 0
    assert not any("control socket" in l for l in live.stderr_lines)


def test_rplbctl_without_a_running_rplb(tmp_path):
    proc = subprocess.run([*CTL, "--socket", str(tmp_path / "none.sock"), "status"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.startswith("rplbctl: error: cannot connect to")
    assert "is rplb-dpdk running" in proc.stderr and "Traceback" not in proc.stderr
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "stale.sock"))
    stale.close()
    proc = subprocess.run([*CTL, "--socket", str(tmp_path / "stale.sock"), "flows"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "connection refused" in proc.stderr
    usage = subprocess.run([*CTL, "backend", "frobnicate"], capture_output=True, text=True)
    assert usage.returncode == 2 and "invalid choice" in usage.stderr


# ---- live traffic during changes (net_tap) -----------------------------------------

def test_backend_changes_with_live_traffic(tmp_path):
    config = write_config(tmp_path / "services.yaml")
    sock = str(tmp_path / "rplb.sock")
    wire = TapWire(tmp_path, ["--config", str(config), "--control-socket", sock])

    def ctl(*args):
        proc = rplbctl(["--socket", sock, *args], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return proc

    def send(flows, flags):
        return by_flow([bytes(p) for p in wire.to_backends(client_segments(flows, flags),
                                                           from_test_clients)])

    try:
        old = [(f"100.64.0.{i + 1}", 10000 + i) for i in range(150)]
        first = send(old, "S")
        assert len(first) == 150

        # A backend added with a high weight: new flows go (mostly) to it,
        # every existing flow stays where it was.
        ctl("backend", "add", "web", f"{B3}:8080", "--weight", "200")
        added = [(f"100.64.1.{i + 1}", 20000 + i) for i in range(150)]
        second = send(old + added, "S")
        for flow in old:
            assert second[flow] == first[flow], flow
        on_b3 = [f for f in added if second[f] == {(B3, 8080)}]
        assert len(on_b3) > 120, len(on_b3)

        # Weight 0 drains: B3's flows keep it, new flows never get it.
        ctl("backend", "set-weight", "web", f"{B3}:8080", "0")
        fresh = [(f"100.64.2.{i + 1}", 30000 + i) for i in range(150)]
        third = send(old + added + fresh, "A")
        for flow in old + added:
            assert third[flow] == second[flow], flow
        assert all(third[f] != {(B3, 8080)} for f in fresh)
        assert {next(iter(third[f])) for f in fresh} == {(B1, 8080), (B2, 8080)}

        # Removed: no packet reaches it, its flows move, the others stay.
        ctl("backend", "del", "web", f"{B3}:8080")
        fourth = send(old + added + fresh, "A")
        assert len(fourth) == 450
        assert all((B3, 8080) not in backends for backends in fourth.values())
        for flow in old + fresh:
            assert fourth[flow] == third[flow], flow
    finally:
        rc, _ = wire.stop()
    assert rc == 0
    stats = json.loads(wire.stats_path.read_text())
    assert stats["mbufs_in_use_at_exit"] == 0
    assert stats["events"]["flows_moved"] == len(on_b3)
    assert not os.path.exists(sock)


def test_only_the_main_thread_takes_signals(daemon):
    # The control thread (and EAL's, and OpenBLAS's from numpy's import)
    # must block SIGINT/SIGTERM/SIGHUP: one delivered to such a thread
    # while the main thread is busy killed the process (SIGHUP) or raised
    # KeyboardInterrupt in the middle of anything (SIGINT).
    wanted = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGHUP - 1))
    pid = daemon.live.proc.pid
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        if int(tid) == pid:
            continue                    # the main thread: unblocks them in sigtimedwait
        try:
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except FileNotFoundError:       # a connection thread that just ended
            continue
        blocked = int(next(l for l in status.splitlines() if l.startswith("SigBlk:")).split()[1], 16)
        threads[f"{name}/{tid}"] = blocked & wanted == wanted
    assert len(threads) >= 3 and all(threads.values()), threads
    # Signals sent while the main thread is busy answering requests are
    # still taken by it: SIGHUP reloads, SIGINT stops cleanly.
    for _ in range(5):
        daemon.live.signal(signal.SIGHUP)
        assert daemon.request({"cmd": "stats"})["ok"]
    daemon.stop()
    stderr = "\n".join(daemon.live.stderr_lines)
    assert stderr.count("SIGHUP: reloaded") >= 1 and "SIGINT: stopping" in stderr
