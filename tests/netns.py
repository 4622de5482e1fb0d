"""A real client, real servers and rplb between them, with network namespaces.

    ns CLIENT                      root ns (rplb)                    ns SERVERS
  203.0.113.2/24  c0 ==veth== c1 [net_af_packet port 0 | port 1] s1 ==veth== s0
                                                                    192.168.1.10-12/24
                                                                    10.0.0.100/32, .101/32

rplb is a bump in the wire: the client reaches the VIPs on-link (ARP for the
VIP crosses rplb and is answered by the server side, which holds the VIPs as
a router would), the servers reach the client on-link.  HTTP servers answer
with their own name; a UDP echo server runs on each backend address.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import List

from harness import LiveRplb, eal_args, file_prefix

CLIENT_IP = "203.0.113.2"
VIPS = ("10.0.0.100", "10.0.0.101")
BACKENDS = ("192.168.1.10", "192.168.1.11", "192.168.1.12", "192.168.1.13")

HTTP_SERVER = r"""
import http.server, os, sys, socketserver
name, ip, port, blob = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        if self.path == "/blob":
            size = os.path.getsize(blob)
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.send_header("X-Backend", name)
            self.end_headers()
            with open(blob, "rb") as f:
                while True:
                    chunk = f.read(1 << 16)
                    if not chunk:
                        break
                    self.wfile.write(chunk)
            return
        body = (name + "\n").encode()
        self.send_response(200)
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


def sh(*cmd, check=True, ns=None, **kw):
    if ns:
        cmd = ("ip", "netns", "exec", ns, *cmd)
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


class Topology:
    def __init__(self, tmp_path: Path, tag: str):
        self.tmp = tmp_path
        self.client_ns, self.server_ns = f"rplbc{tag}", f"rplbs{tag}"
        self.c0, self.c1, self.s0, self.s1 = (f"rc0{tag}", f"rc1{tag}", f"rs0{tag}", f"rs1{tag}")
        self.processes: List[subprocess.Popen] = []
        self.rplb = None
        self.blob = tmp_path / "blob.bin"

    # ---- wiring ------------------------------------------------------------

    def create(self):
        self.destroy_links()
        for ns in (self.client_ns, self.server_ns):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "link", "add", self.c0, "type", "veth", "peer", "name", self.c1)
        sh("ip", "link", "add", self.s0, "type", "veth", "peer", "name", self.s1)
        sh("ip", "link", "set", self.c0, "netns", self.client_ns)
        sh("ip", "link", "set", self.s0, "netns", self.server_ns)
        for dev in (self.c1, self.s1):
            # No router solicitations etc. from the root side of the wire.
            sh("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
            sh("ip", "link", "set", dev, "up")
        c, s = self.client_ns, self.server_ns
        sh("ip", "addr", "add", f"{CLIENT_IP}/24", "dev", self.c0, ns=c)
        sh("ip", "link", "set", self.c0, "up", ns=c)
        for vip in VIPS:
            sh("ip", "route", "add", f"{vip}/32", "dev", self.c0, ns=c)
        for ip in BACKENDS:
            sh("ip", "addr", "add", f"{ip}/24", "dev", self.s0, ns=s)
        for vip in VIPS:
            sh("ip", "addr", "add", f"{vip}/32", "dev", self.s0, ns=s)
        sh("ip", "link", "set", self.s0, "up", ns=s)
        sh("ip", "route", "add", "203.0.113.0/24", "dev", self.s0, ns=s)
        for ns, dev in ((c, self.c0), (s, self.s0)):
            # Locally generated TCP would leave with partial checksums that
            # the far stack rejects (DPDK-NOTES: veth recipe).
            sh("ethtool", "-K", dev, "tx", "off", ns=ns)
            sh("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1", ns=ns)

    def add_client_addresses(self, addresses):
        """More client addresses on the client's interface (the servers
        reach the whole /24 on-link, through rplb)."""
        for ip in addresses:
            sh("ip", "addr", "add", f"{ip}/24", "dev", self.c0, ns=self.client_ns)

    def start_servers(self, blob_mb: int = 40):
        with open(self.blob, "wb") as f:
            f.write(os.urandom(blob_mb << 20))
        for n, ip in enumerate(BACKENDS):
            name = f"backend{n + 1}"
            self._spawn(self.server_ns, HTTP_SERVER, name, ip, "8080", str(self.blob))
            self._spawn(self.server_ns, UDP_ECHO, name, ip, "5353")
        deadline = time.monotonic() + 10
        for ip in BACKENDS:
            while sh("curl", "-s", "-m", "1", f"http://{ip}:8080/", ns=self.server_ns,
                     check=False).returncode != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"HTTP server on {ip} did not start")
                time.sleep(0.1)

    def _spawn(self, ns, program, *args):
        self.processes.append(subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", program, *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def start_rplb(self, config: Path, *rplb_args, qpairs: int = 1, lcores: str = "0-1"):
        """rplb on both root-side ends; qpairs: queue pairs of each
        net_af_packet port (one per worker: give as many worker lcores)."""
        prefix = file_prefix()
        queues = f",qpairs={qpairs}" if qpairs > 1 else ""
        vdevs = [f"net_af_packet0,iface={self.c1}{queues},framecnt=8192",
                 f"net_af_packet1,iface={self.s1}{queues},framecnt=8192"]
        self.rplb = LiveRplb([*eal_args(prefix, vdevs, lcores), "--", "--config", str(config),
                              "--stats-json", str(self.tmp / "stats.json"),
                              "--control-socket", str(self.tmp / "rplb.sock"), *rplb_args],
                             prefix, cwd=self.tmp)
        self.rplb.wait_for_stderr("forwarding with")

    # ---- use ---------------------------------------------------------------

    def client(self, *cmd, check=False, timeout=60):
        return sh(*cmd, ns=self.client_ns, check=check, timeout=timeout)

    def client_popen(self, *cmd, **kw):
        return subprocess.Popen(["ip", "netns", "exec", self.client_ns, *cmd], **kw)

    # ---- teardown ----------------------------------------------------------

    def destroy_links(self):
        for ns in (self.client_ns, self.server_ns):
            sh("ip", "netns", "del", ns, check=False)
        for dev in (self.c1, self.s1):
            sh("ip", "link", "del", dev, check=False)

    def destroy(self):
        rc = None
        if self.rplb is not None:
            rc, _ = self.rplb.stop()
        for proc in self.processes:
            proc.kill()
            proc.wait()
        self.destroy_links()
        return rc
