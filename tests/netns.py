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
import hashlib, http.server, os, sys, socketserver
name, ip, port, blob = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_POST(self):
        # An upload: answered with the SHA-256 of the body received.
        left = int(self.headers.get("Content-Length", 0))
        digest = hashlib.sha256()
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
        body = (digest.hexdigest() + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
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
        # Eight interpreters starting on a machine whose CPUs busy-polling
        # DPDK workers may hold: a generous bound (it only matters when a
        # server never starts).
        deadline = time.monotonic() + 60
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


class RoutedTopology(Topology):
    """Routers on both sides of rplb, each with a hop of a small MTU on its
    far side, and rplb's ports on net_pcap with rx_iface_in and tx_iface on
    the veths: DPDK 22.11's net_af_packet has the kernel reassemble
    fragments before the PMD sees them, and its net_af_xdp keeps about
    4,097 mbufs of the pool in its fill rings when the port closes, which
    rplb's exit check reports as a leak.  (rx_iface_in: rplb does not read
    back what it sends.)

      ns CLIENT          ns ROUTER1                    root ns           ns ROUTER2                   ns SERVERS
    198.51.100.2 c0 == a0 198.51.100.1  b0 203.0.113.1 == rc1 [rplb] rs1 == d0 203.0.113.254  e0 192.168.1.1 == s0 192.168.1.10-13
                      route to the client:          (VIP routes on-link)     VIPs /32 (ARP)   route to the servers:
                      mtu lock 1280                                                           mtu lock 1280

    The small hops are route MTUs ("mtu lock": a forwarding router honours
    it), not device MTUs: a veth drops frames larger than its peer's MTU
    on receipt, which would cut the other direction too.  So a server's
    1,500-byte segment to the client makes ROUTER1 send "fragmentation
    needed" to the VIP (rplb translates it to the backend), and a client's
    to a server makes ROUTER2 send one to the client (rplb translates it
    back); fragments of up to 1,500 bytes cross rplb both ways, and the
    routers cut them again for the 1,280-byte hops.  Names follow Topology's
    (rplbc<tag>, rplbs<tag>, rc1<tag>, rs1<tag>), the routers rplbr<tag> and
    rplbq<tag> (.ci/run removes those of dead test processes)."""

    CLIENT = "198.51.100.2"
    ROUTER1 = ("198.51.100.1", "203.0.113.1")
    ROUTER2 = ("203.0.113.254", "192.168.1.1")
    HOP_MTU = 1280

    def __init__(self, tmp_path: Path, tag: str, vips=("10.0.0.100",)):
        super().__init__(tmp_path, tag)
        self.router1_ns, self.router2_ns = f"rplbr{tag}", f"rplbq{tag}"
        self.vips = tuple(vips)

    def namespaces(self):
        return (self.client_ns, self.router1_ns, self.router2_ns, self.server_ns)

    def create(self):
        self.destroy_links()
        c, r1, r2, s = self.namespaces()
        for ns in self.namespaces():
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
            # Path-MTU discovery by ICMP alone, as the issue asks: no
            # probing that would find the MTU without the errors.
            sh("sysctl", "-qw", "net.ipv4.tcp_mtu_probing=0", ns=ns)
        for ns in (r1, r2):
            sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=ns)
        # Each pair: (namespace, end), (namespace or None for root, end).
        pairs = [((c, "c0"), (r1, "a0")), ((r1, "b0"), (None, self.c1)),
                 ((None, self.s1), (r2, "d0")), ((r2, "e0"), (s, "s0"))]
        for (ns1, end1), (ns2, end2) in pairs:
            sh("ip", "link", "add", end1, *(("netns", ns1) if ns1 else ()), "type", "veth",
               "peer", "name", end2, *(("netns", ns2) if ns2 else ()))
        for ns, dev in ((c, "c0"), (r1, "a0"), (r1, "b0"), (r2, "d0"), (r2, "e0"), (s, "s0")):
            sh("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1", ns=ns)
            # Locally made TCP leaves with partial checksums otherwise
            # (DPDK-NOTES); no GRO/GSO, so frames are as the stack cut them.
            sh("ethtool", "-K", dev, "tx", "off", "gso", "off", "gro", "off", "tso", "off",
               ns=ns)
            sh("ip", "link", "set", dev, "up", ns=ns)
        for dev in (self.c1, self.s1):
            sh("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
            sh("ethtool", "-K", dev, "gso", "off", "gro", "off", "tso", "off")
            sh("ip", "link", "set", dev, "up")
        sh("ip", "addr", "add", f"{self.CLIENT}/24", "dev", "c0", ns=c)
        sh("ip", "route", "add", "default", "via", self.ROUTER1[0], ns=c)
        sh("ip", "addr", "add", f"{self.ROUTER1[0]}/24", "dev", "a0", ns=r1)
        sh("ip", "route", "replace", "198.51.100.0/24", "dev", "a0", "src", self.ROUTER1[0],
           "mtu", "lock", str(self.HOP_MTU), ns=r1)
        sh("ip", "addr", "add", f"{self.ROUTER1[1]}/24", "dev", "b0", ns=r1)
        for vip in self.vips:
            sh("ip", "route", "add", f"{vip}/32", "dev", "b0", ns=r1)
        sh("ip", "addr", "add", f"{self.ROUTER2[0]}/24", "dev", "d0", ns=r2)
        for vip in self.vips:
            sh("ip", "addr", "add", f"{vip}/32", "dev", "d0", ns=r2)
        sh("ip", "route", "add", "198.51.100.0/24", "via", self.ROUTER1[1], ns=r2)
        sh("ip", "addr", "add", f"{self.ROUTER2[1]}/24", "dev", "e0", ns=r2)
        sh("ip", "route", "replace", "192.168.1.0/24", "dev", "e0", "src", self.ROUTER2[1],
           "mtu", "lock", str(self.HOP_MTU), ns=r2)
        for ip in BACKENDS:
            sh("ip", "addr", "add", f"{ip}/24", "dev", "s0", ns=s)
        sh("ip", "route", "add", "default", "via", self.ROUTER2[1], ns=s)

    def start_rplb(self, config: Path, *rplb_args):
        prefix = file_prefix()
        vdevs = [f"net_pcap0,rx_iface_in={self.c1},tx_iface={self.c1}",
                 f"net_pcap1,rx_iface_in={self.s1},tx_iface={self.s1}"]
        self.rplb = LiveRplb([*eal_args(prefix, vdevs), "--", "--config", str(config),
                              "--stats-json", str(self.tmp / "stats.json"),
                              "--control-socket", str(self.tmp / "rplb.sock"), *rplb_args],
                             prefix, cwd=self.tmp)
        self.rplb.wait_for_stderr("forwarding with")

    def run(self, ns, *cmd, check=False, timeout=60):
        return sh(*cmd, ns=ns, check=check, timeout=timeout)

    def destroy_links(self):
        for ns in self.namespaces():
            sh("ip", "netns", "del", ns, check=False)
        for dev in (self.c1, self.s1):
            sh("ip", "link", "del", dev, check=False)
