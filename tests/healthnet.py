"""Health checks end to end: real HTTP servers in a namespace behind rplb's
backend port, rplb's own kernel interface in the root namespace.

    ns CLIENT                    root ns (rplb)                      ns SERVERS
  203.0.113.2/24 c0 ==veth== c1 [af_packet port 0 | port 1] s1 ==veth== s0
                                          |                        NET.10-12/24
                               kernel interface (net_tap)          10.0.0.100/32
                               NET.2/24

The kernel interface lives in the root namespace, which every test on this
machine shares: each topology takes its own /24 (NET, from the pid and a
counter) and its own interface and namespace names, and removes them.
Each backend serves HTTP on port 8080: "/" answers its name, "/healthz"
the status written in its status file (200 unless a test writes another).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from harness import LiveRplb, eal_args, file_prefix
from netns import sh

CLIENT_IP = "203.0.113.2"
VIP = "10.0.0.100"
_counter = itertools.count()

SERVER = r"""
import http.server, socketserver, sys
name, ip, port, status_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        if self.path == "/healthz":
            with open(status_file) as f:
                status = int(f.read().strip() or 200)
            body = b"health\n"
        else:
            status, body = 200, (name + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
Server((ip, port), Handler).serve_forever()
"""

UDP_ECHO = r"""
import socket, sys
name, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((ip, port))
while True:
    data, peer = s.recvfrom(65536)
    s.sendto(name.encode() + b":" + data, peer)
"""

# A client that opens a connection to the VIP every period seconds (each in
# a thread of its own, so that a slow one does not delay the next) and
# prints one JSON line per attempt: its start time, and the backend that
# answered or the error.
CLIENT = r"""
import json, socket, sys, threading, time
vip, period, stop_file = sys.argv[1], float(sys.argv[2]), sys.argv[3]
lock = threading.Lock()
def attempt(started):
    result = {"t": started}
    try:
        with socket.create_connection((vip, 80), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        result["backend"] = body.decode().strip() if head.startswith(b"HTTP/1.0 200") else None
        if result["backend"] is None:
            result["error"] = head[:40].decode(errors="replace")
    except OSError as err:
        result["error"] = type(err).__name__
    with lock:
        print(json.dumps(result), flush=True)
import os
next_start = time.time()
while not os.path.exists(stop_file):
    threading.Thread(target=attempt, args=(next_start,), daemon=True).start()
    next_start += period
    time.sleep(max(0.0, next_start - time.time()))
time.sleep(2.5)
"""


def tag() -> str:
    return f"{os.getpid() % 100000}{next(_counter)}"


class HealthNet:
    def __init__(self, tmp_path: Path, backends: int = 3):
        self.tmp = tmp_path
        n = tag()
        self.client_ns, self.server_ns = f"rhc{n}", f"rhs{n}"
        self.c0, self.c1, self.s0, self.s1 = (f"rhc0{n}", f"rhc1{n}", f"rhs0{n}", f"rhs1{n}")
        self.kernel_if = f"rhk{n}"
        # A /24 of 10.64.0.0/10 of this test's own, from the pid and the counter.
        index = (os.getpid() * 16 + int(n[-1]) + next(_counter)) % (64 * 256)
        self.net = f"10.{64 + index // 256}.{index % 256}"
        self.source = f"{self.net}.2/24"
        self.backends = [f"{self.net}.{10 + i}" for i in range(backends)]
        self.names = {ip: f"backend{i + 1}" for i, ip in enumerate(self.backends)}
        self.servers: Dict[str, subprocess.Popen] = {}
        self.processes: List[subprocess.Popen] = []
        self.rplb: Optional[LiveRplb] = None
        self.socket = tmp_path / "rplb.sock"

    # ---- wiring ------------------------------------------------------------

    def create(self) -> "HealthNet":
        for ns in (self.client_ns, self.server_ns):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "link", "add", self.c0, "type", "veth", "peer", "name", self.c1)
        sh("ip", "link", "add", self.s0, "type", "veth", "peer", "name", self.s1)
        sh("ip", "link", "set", self.c0, "netns", self.client_ns)
        sh("ip", "link", "set", self.s0, "netns", self.server_ns)
        for dev in (self.c1, self.s1):
            sh("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
            # The root namespace's own end of each wire sees every frame
            # (af_packet does not take them from the kernel, as a NIC bound
            # to DPDK would), and the kernel would answer ARP for rplb's
            # kernel interface's address there itself (Linux answers for
            # any of its addresses on any interface): no ARP on them.
            sh("ip", "link", "set", dev, "arp", "off")
            sh("ip", "link", "set", dev, "up")
        c, s = self.client_ns, self.server_ns
        sh("ip", "addr", "add", f"{CLIENT_IP}/24", "dev", self.c0, ns=c)
        sh("ip", "link", "set", self.c0, "up", ns=c)
        sh("ip", "route", "add", f"{VIP}/32", "dev", self.c0, ns=c)
        for ip in self.backends:
            sh("ip", "addr", "add", f"{ip}/24", "dev", self.s0, ns=s)
        sh("ip", "addr", "add", f"{VIP}/32", "dev", self.s0, ns=s)
        sh("ip", "link", "set", self.s0, "up", ns=s)
        sh("ip", "route", "add", "203.0.113.0/24", "dev", self.s0, ns=s)
        for ns, dev in ((c, self.c0), (s, self.s0)):
            sh("ethtool", "-K", dev, "tx", "off", ns=ns)
            sh("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1", ns=ns)
        return self

    # ---- servers -------------------------------------------------------------

    def status_file(self, ip: str) -> Path:
        return self.tmp / f"status-{ip}"

    def set_health_status(self, ip: str, status: int) -> None:
        self.status_file(ip).write_text(str(status))

    def start_server(self, ip: str) -> None:
        """Start (or restart) the HTTP server of backend ip; returns once it answers."""
        if not self.status_file(ip).exists():
            self.set_health_status(ip, 200)
        self.servers[ip] = subprocess.Popen(
            ["ip", "netns", "exec", self.server_ns, sys.executable, "-c", SERVER,
             self.names[ip], ip, "8080", str(self.status_file(ip))],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while sh("curl", "-s", "-m", "1", "-o", "/dev/null", f"http://{ip}:8080/",
                 ns=self.server_ns, check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP server on {ip} did not start")
            time.sleep(0.05)

    def kill_server(self, ip: str) -> float:
        """Kill backend ip's server; returns when (time.time()) it was dead."""
        proc = self.servers.pop(ip)
        proc.kill()
        proc.wait()
        return time.time()

    def start_udp_echo(self, ip: str, port: int = 5353) -> subprocess.Popen:
        """A UDP echo server on ip:port (it answers "<name>:<datagram>");
        returns once it answers."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.server_ns, sys.executable, "-c", UDP_ECHO,
             self.names[ip], ip, str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes.append(proc)
        probe = ("import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                 "s.settimeout(0.2); s.sendto(b'x', (sys.argv[1], int(sys.argv[2]))); "
                 "s.recvfrom(100)")
        deadline = time.monotonic() + 10
        while sh(sys.executable, "-c", probe, ip, str(port), ns=self.server_ns,
                 check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the UDP echo server on {ip} did not start")
        return proc

    # ---- rplb --------------------------------------------------------------

    def config(self, health: dict, **top) -> dict:
        return {"flow_table_size": 65536,
                "health_checks": {"source": self.source, "interface": self.kernel_if, **top},
                "services": [{"name": "web", "vip": VIP, "proto": "tcp", "port": 80,
                              "health": health,
                              "backends": [{"ip": ip, "port": 8080} for ip in self.backends]}]}

    def start_rplb(self, config: dict, *rplb_args) -> None:
        import yaml
        self.config_path = self.tmp / "services.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        prefix = file_prefix()
        vdevs = [f"net_af_packet0,iface={self.c1},framecnt=8192",
                 f"net_af_packet1,iface={self.s1},framecnt=8192"]
        self.rplb = LiveRplb([*eal_args(prefix, vdevs), "--", "--config", str(self.config_path),
                              "--stats-json", str(self.tmp / "stats.json"),
                              "--control-socket", str(self.socket), *rplb_args],
                             prefix, cwd=self.tmp)
        self.rplb.wait_for_stderr("forwarding with")

    def ctl(self, *args, check=True) -> subprocess.CompletedProcess:
        out = subprocess.run([sys.executable, "-m", "rplb.ctl", "--socket", str(self.socket),
                              *args], capture_output=True, text=True, timeout=30)
        if check:
            assert out.returncode == 0, out.stderr
        return out

    def request(self, cmd: str, **fields) -> dict:
        from rplb.control import request
        reply = request(str(self.socket), {"cmd": cmd, **fields})
        assert reply["ok"], reply
        return reply

    def backend_states(self, service: str = "web") -> Dict[str, dict]:
        """ip -> the backend's entry of rplbctl service list --json."""
        services = self.request("service.list")["services"]
        entry = next(s for s in services if s.get("name") == service)
        return {b["ip"]: b for b in entry["backends"]}

    def wait_for_state(self, ip: str, state: str, timeout: float = 15, service: str = "web",
                       health: Optional[str] = None) -> dict:
        """Until backend ip of service is state (up/down; and its health,
        if given); its entry of rplbctl service list --json."""
        deadline = time.monotonic() + timeout
        while True:
            entry = self.backend_states(service)[ip]
            if entry["state"]["state"] == state and \
                    (health is None or entry["state"]["health"] == health):
                return entry
            if time.monotonic() > deadline:
                raise AssertionError(f"backend {ip} not {state} within {timeout} s: {entry}")
            time.sleep(0.05)

    # ---- clients -----------------------------------------------------------

    def start_client(self, period: float = 0.1) -> "Client":
        return Client(self, period)

    def client(self, *cmd, check=False, timeout=60):
        return sh(*cmd, ns=self.client_ns, check=check, timeout=timeout)

    # ---- teardown ----------------------------------------------------------

    def destroy(self):
        rc = None
        if self.rplb is not None:
            rc, _ = self.rplb.stop()
        for proc in [*self.servers.values(), *self.processes]:
            proc.kill()
            proc.wait()
        for ns in (self.client_ns, self.server_ns):
            sh("ip", "netns", "del", ns, check=False)
        for dev in (self.c1, self.s1):
            sh("ip", "link", "del", dev, check=False)
        return rc


class Client:
    """The connection-every-period client in the client namespace."""

    def __init__(self, net: HealthNet, period: float):
        self.stop_file = net.tmp / f"stop-client-{next(_counter)}"
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", net.client_ns, sys.executable, "-c", CLIENT, VIP,
             str(period), str(self.stop_file)], stdout=subprocess.PIPE, text=True)

    def stop(self) -> List[dict]:
        """Ends the client (after its last attempts finish); its attempts in
        start order."""
        self.stop_file.write_text("stop")
        out, _ = self.proc.communicate(timeout=30)
        return sorted((json.loads(line) for line in out.splitlines() if line.strip()),
                      key=lambda a: a["t"])
