"""End to end over IPv6 with real kernels (issue 19): curl -6 and ping -6
in one namespace, IPv6 HTTP servers in another, rplb between them on
net_af_packet ports, with an IPv4 service in the same services file.

    ns CLIENT                           root ns (rplb)                 ns SERVERS
  fd00:c::2/64      c0 ==veth== c1 [af_packet port 0 | port 1] s1 ==veth== s0  fd00:1::10-12/64
  203.0.113.2/24                                                              fd00::100/128 (VIP)
  route fd00::100/128 dev c0                                                   192.168.1.10-12/24
                                                                               10.0.0.100/32 (VIP)

As in the IPv4 tests (tests/netns.py), rplb is a bump in the wire: the
client reaches the VIP on-link, so neighbour discovery for the VIP crosses
rplb and is answered by the server side, which holds the VIP as a router
would; the servers reach the client on-link (fd00:c::/64 dev s0), their
neighbour solicitations crossing rplb the other way.  Duplicate address
detection is off in both namespaces (and every address is added nodad),
so addresses are usable at once.

Needs the IPv6 fast path: on an engine that refuses IPv6 services at
publish, rplb-dpdk does not start with this file and the module skips,
saying so.
"""

import collections
import json
import math
import os
import subprocess
import sys
import time

import pytest
import yaml

from netns import Topology, sh

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

CLIENT6 = "fd00:c::2"
VIP6 = "fd00::100"
BACKENDS6 = {"fd00:1::10": 1, "fd00:1::11": 2, "fd00:1::12": 3}       # address: weight
NAMES6 = {ip: f"backend6-{n + 1}" for n, ip in enumerate(BACKENDS6)}
CLIENT4, VIP4 = "203.0.113.2", "10.0.0.100"
BACKENDS4 = {"192.168.1.10": 1, "192.168.1.11": 1}
CURLS = 200

HTTP6_SERVER = r"""
import http.server, socket, socketserver, sys
name, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        # Who answered, and whom it saw: the client's own address, not
        # rplb's (NAT mode keeps the client's source).
        body = f"{name} {self.client_address[0]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    address_family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    daemon_threads = True
    allow_reuse_address = True
Server((ip, port), Handler).serve_forever()
"""


def services() -> dict:
    return {"flow_table_size": 65536, "services": [
        {"name": "web6", "vip": VIP6, "proto": "tcp", "port": 80,
         "backends": [{"ip": ip, "port": 8080, "weight": w} for ip, w in BACKENDS6.items()]},
        {"name": "web4", "vip": VIP4, "proto": "tcp", "port": 80,
         "backends": [{"ip": ip, "port": 8080, "weight": w} for ip, w in BACKENDS4.items()]},
    ]}


class Ipv6Topology(Topology):
    """Topology's namespaces and veths, with IPv6 on the namespace ends."""

    def create(self):
        self.destroy_links()
        c, s = self.client_ns, self.server_ns
        for ns in (c, s):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
            for scope in ("all", "default"):
                sh("sysctl", "-qw", f"net.ipv6.conf.{scope}.accept_dad=0", ns=ns)
        sh("ip", "link", "add", self.c0, "type", "veth", "peer", "name", self.c1)
        sh("ip", "link", "add", self.s0, "type", "veth", "peer", "name", self.s1)
        sh("ip", "link", "set", self.c0, "netns", c)
        sh("ip", "link", "set", self.s0, "netns", s)
        for dev in (self.c1, self.s1):
            # The root side is only rplb's wire: no addresses, no router
            # solicitations of its own.
            sh("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
            sh("ip", "link", "set", dev, "up")
        for ns, dev in ((c, self.c0), (s, self.s0)):
            sh("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=0", ns=ns)
            sh("sysctl", "-qw", f"net.ipv6.conf.{dev}.accept_dad=0", ns=ns)
            # Locally generated TCP would leave with partial checksums that
            # the far stack rejects (DPDK-NOTES: veth recipe).
            sh("ethtool", "-K", dev, "tx", "off", ns=ns)
        sh("ip", "-6", "addr", "add", f"{CLIENT6}/64", "dev", self.c0, "nodad", ns=c)
        sh("ip", "addr", "add", f"{CLIENT4}/24", "dev", self.c0, ns=c)
        sh("ip", "link", "set", self.c0, "up", ns=c)
        sh("ip", "-6", "route", "add", f"{VIP6}/128", "dev", self.c0, ns=c)
        sh("ip", "route", "add", f"{VIP4}/32", "dev", self.c0, ns=c)
        for ip in BACKENDS6:
            sh("ip", "-6", "addr", "add", f"{ip}/64", "dev", self.s0, "nodad", ns=s)
        sh("ip", "-6", "addr", "add", f"{VIP6}/128", "dev", self.s0, "nodad", ns=s)
        for ip in BACKENDS4:
            sh("ip", "addr", "add", f"{ip}/24", "dev", self.s0, ns=s)
        sh("ip", "addr", "add", f"{VIP4}/32", "dev", self.s0, ns=s)
        sh("ip", "link", "set", self.s0, "up", ns=s)
        sh("ip", "-6", "route", "add", "fd00:c::/64", "dev", self.s0, ns=s)
        sh("ip", "route", "add", "203.0.113.0/24", "dev", self.s0, ns=s)
        # Usable at once: nothing tentative (DAD is off), links up.
        deadline = time.monotonic() + 10
        for ns, dev in ((c, self.c0), (s, self.s0)):
            while sh("ip", "-6", "addr", "show", "dev", dev, "tentative", ns=ns).stdout.strip() \
                    or "state UP" not in sh("ip", "link", "show", dev, ns=ns).stdout:
                assert time.monotonic() < deadline, sh("ip", "addr", ns=ns).stdout
                time.sleep(0.05)

    def start_servers(self):
        for ip in BACKENDS6:
            self._spawn(self.server_ns, HTTP6_SERVER, NAMES6[ip], ip, "8080")
        for n, ip in enumerate(BACKENDS4):
            self._spawn(self.server_ns, HTTP6_SERVER, f"backend4-{n + 1}", ip, "8080")
        deadline = time.monotonic() + 60
        for ip in [*BACKENDS6, *BACKENDS4]:
            url = f"http://[{ip}]:8080/" if ":" in ip else f"http://{ip}:8080/"
            while sh("curl", "-s", "-m", "1", url, ns=self.server_ns, check=False).returncode:
                assert time.monotonic() < deadline, f"HTTP server on {ip} did not start"
                time.sleep(0.1)

    def mac(self, ns, dev) -> str:
        return sh("cat", f"/sys/class/net/{dev}/address", ns=ns).stdout.strip()


@pytest.fixture(scope="module")
def wire(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e6")
    topo = Ipv6Topology(tmp, f"6{os.getpid()}")
    topo.config = tmp / "services.yaml"
    topo.config.write_text(yaml.safe_dump(services()))
    started = False
    try:
        topo.create()
        topo.start_servers()
        try:
            topo.start_rplb(topo.config)
        except AssertionError as err:
            if "family 6" in str(err):
                pytest.skip("needs the IPv6 fast path: this engine refuses IPv6 services")
            raise
        started = True
        yield topo
    finally:
        exit_status = topo.destroy()
    if started:
        # rplb stopped cleanly and got every mbuf back.
        assert exit_status == 0
        assert json.loads((tmp / "stats.json").read_text())["mbufs_in_use_at_exit"] == 0


def rplbctl(wire, *args) -> str:
    out = subprocess.run([sys.executable, "-m", "rplb.ctl", "--socket",
                          str(wire.tmp / "rplb.sock"), *args],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def curl(wire, url, *extra, timeout=10):
    return wire.client("curl", "-s", "-m", str(timeout), *extra, url, timeout=timeout + 5)


def echo_requests_seen_by_servers(wire) -> int:
    """ICMPv6 echo requests the server namespace's kernel received."""
    for line in sh("cat", "/proc/net/snmp6", ns=wire.server_ns).stdout.splitlines():
        name, _, value = line.partition(" ")
        if name == "Icmp6InEchos":
            return int(value)
    raise AssertionError("no Icmp6InEchos in /proc/net/snmp6")


def echo_replies_by_rplb(wire) -> int:
    """rplb's count of echo requests to a VIP it answered itself."""
    events = json.loads(rplbctl(wire, "stats", "--json"))["events"]
    return sum(int(v) for k, v in events.items() if "echo" in k)


def test_neighbour_discovery_crosses_rplb(wire):
    """The client resolves the VIP, and the servers the client, by ND
    through rplb: the answers carry the far side's MAC."""
    wire.client("ip", "-6", "neigh", "flush", "dev", wire.c0)
    sh("ip", "-6", "neigh", "flush", "dev", wire.s0, ns=wire.server_ns)
    out = curl(wire, f"http://[{VIP6}]/", "-6")
    assert out.returncode == 0, out.stderr
    server_mac, client_mac = wire.mac(wire.server_ns, wire.s0), wire.mac(wire.client_ns, wire.c0)
    neigh = wire.client("ip", "-6", "neigh", "show", VIP6, "dev", wire.c0).stdout
    assert f"lladdr {server_mac}" in neigh, neigh
    assert any(state in neigh for state in ("REACHABLE", "STALE", "DELAY", "PROBE")), neigh
    neigh = sh("ip", "-6", "neigh", "show", CLIENT6, "dev", wire.s0, ns=wire.server_ns).stdout
    assert f"lladdr {client_mac}" in neigh, neigh


def test_ping6_to_the_vip_is_answered_by_rplb(wire):
    servers_before = echo_requests_seen_by_servers(wire)
    replied_before = echo_replies_by_rplb(wire)
    out = wire.client("ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", VIP6)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 received" in out.stdout
    replies = [line for line in out.stdout.splitlines() if "bytes from" in line]
    assert len(replies) == 3
    assert all(f"from {VIP6}:" in line for line in replies), replies   # the reply's source
    # rplb answered: it counted them, and no request reached the servers
    # (which hold the VIP too, and would have answered).
    assert echo_replies_by_rplb(wire) - replied_before >= 3
    assert echo_requests_seen_by_servers(wire) == servers_before


def test_curl6_200_times_follows_the_weights(wire):
    counts = collections.Counter()
    for _ in range(CURLS):
        out = curl(wire, f"http://[{VIP6}]/", "-6")
        assert out.returncode == 0, (counts, out.stderr)
        name, seen_client = out.stdout.split()
        assert seen_client == CLIENT6          # NAT mode: the client's own address
        counts[name] += 1
    assert sum(counts.values()) == CURLS
    total = sum(BACKENDS6.values())
    for ip, weight in BACKENDS6.items():
        # Each connection is a new client port: a backend's count is
        # binomial; allow four standard deviations.
        p = weight / total
        bound = 4 * math.sqrt(CURLS * p * (1 - p)) + 1
        assert abs(counts[NAMES6[ip]] - CURLS * p) <= bound, (counts, ip)
    # The operator's view: bracketed addresses, the new flows counted.
    listed = {s["key"]: s for s in json.loads(rplbctl(wire, "service", "list", "--json"))
              ["services"]}
    web6 = listed[f"[{VIP6}]:tcp:80"]
    assert sum(b["counters"]["new_flows"] for b in web6["backends"]) >= CURLS
    text = rplbctl(wire, "service", "list")
    assert f"[{VIP6}]:80" in text and "[fd00:1::12]:8080" in text
    flows = rplbctl(wire, "flows")
    assert f"web6 [[{VIP6}]:tcp:80]" in flows
    # The sample (closing flows stay for timeouts.tcp_fin, 10 s): the
    # client and backends of IPv6 flows in brackets.
    sampled = [line.split() for line in flows.splitlines() if "-> web6 ->" in line]
    assert sampled, flows
    for client, _, _, _, backend, *_ in sampled:
        assert client.startswith(f"[{CLIENT6}]:"), flows
        assert backend in {f"[{ip}]:8080" for ip in BACKENDS6}, flows


def test_the_ipv4_service_in_the_same_file_keeps_working(wire):
    seen = collections.Counter()
    for _ in range(20):
        out = curl(wire, f"http://{VIP4}/", "-4")
        assert out.returncode == 0, out.stderr
        name, client = out.stdout.split()
        assert client == CLIENT4
        seen[name] += 1
    assert set(seen) == {"backend4-1", "backend4-2"}, seen       # 1:1, 20 connections
    out = wire.client("ping", "-c", "2", "-i", "0.2", "-W", "2", VIP4)
    assert "2 received" in out.stdout, out.stdout + out.stderr


def test_ipv6_backend_changes_through_rplbctl(wire):
    """Drain two backends of the IPv6 service with bracketed rplbctl
    commands: new connections go to the third only; then restore."""
    for ip in ("fd00:1::10", "fd00:1::11"):
        out = rplbctl(wire, "backend", "set-weight", f"[{VIP6}]:tcp:80", f"[{ip}]:8080", "0")
        assert f"backend [{ip}]:8080 weight" in out
    try:
        for _ in range(10):
            out = curl(wire, f"http://[{VIP6}]/", "-6")
            assert out.returncode == 0, out.stderr
            assert out.stdout.split()[0] == NAMES6["fd00:1::12"]
    finally:
        for ip, weight in list(BACKENDS6.items())[:2]:
            rplbctl(wire, "backend", "set-weight", "web6", f"[{ip}]:8080", str(weight))
