"""Observability: the Prometheus endpoint (--prometheus), DPDK telemetry
(/rplb/stats, /rplb/services) and `rplbctl stats --json` agree on the
counters of a running rplb-dpdk; nothing listens on the network unless asked.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from exposition import metric, parse
from harness import LiveRplb, eal_args, file_prefix, run_cli, write_pcap
from rplb.prometheus import CACHE_ABOVE_BACKENDS, escape_label, parse_address, render

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "examples" / "services.yaml"
VIP = "10.0.0.100"
CTL = [sys.executable, "-m", "rplb.ctl"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frames():
    web = [Ether() / IP(src=f"172.16.0.{i}", dst=VIP) / TCP(sport=1000 + i, dport=80, flags="S")
           for i in range(1, 6)]
    dns = [Ether() / IP(src="172.16.1.1", dst=VIP) / UDP(sport=3333, dport=53) / Raw(b"q" * 12)
           for _ in range(3)]
    malformed = [bytes(Ether() / IP(dst=VIP, proto=17) / Raw(b"\x04\x57\x00"))]
    other = [Ether() / IP(src="172.16.2.1", dst="10.9.9.9") / UDP(sport=1, dport=2)]
    return web + dns + malformed + other


class Rplb:
    def __init__(self, tmp: Path, prometheus=None):
        self.tmp = tmp
        self.socket = str(tmp / "rplb.sock")
        self.frames = frames()
        fin = write_pcap(tmp / "fin.pcap", self.frames)
        bin_ = write_pcap(tmp / "bin.pcap", [])
        self.prefix = file_prefix()
        argv = [*eal_args(self.prefix, [f"net_pcap0,rx_pcap={fin},tx_pcap={tmp / 'fout.pcap'}",
                                        f"net_pcap1,rx_pcap={bin_},tx_pcap={tmp / 'bout.pcap'}"]),
                "--", "--config", str(SERVICES), "--control-socket", self.socket,
                *(["--prometheus", prometheus] if prometheus else [])]
        self.live = LiveRplb(argv, self.prefix, cwd=tmp)
        try:
            self.live.wait_for_stderr("forwarding with")
        except BaseException:
            self.live.stop()
            raise

    def ctl_stats(self) -> dict:
        proc = subprocess.run([*CTL, "--socket", self.socket, "stats", "--json"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def wait_for_traffic(self) -> dict:
        """Until every frame was received and has left (sent out of a port, or
        dropped), and a telemetry publish came after the last: then rplbctl,
        telemetry and Prometheus must agree."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stats = self.ctl_stats()
            done = (stats["port"][0]["rx_packets"] == len(self.frames) and
                    stats["port"][0]["tx_packets"] + stats["port"][1]["tx_packets"] +
                    sum(stats["drops"].values()) == len(self.frames))
            if done and self.telemetry_matches(stats):
                return stats
            time.sleep(0.05)
        raise AssertionError(f"the frames did not pass: {stats}")

    def telemetry_matches(self, stats) -> bool:
        tel = self.telemetry("/rplb/stats")[0]
        pairs = [(tel[role], stats["port"][side])
                 for side, role in enumerate(("frontend", "backend"))]
        pairs += [(tel[group], stats[group]) for group in ("events", "drops")]
        return all(published.get(key) == value
                   for published, live in pairs for key, value in live.items())

    def telemetry(self, *commands) -> list:
        path = f"/var/run/dpdk/{self.prefix}/dpdk_telemetry.v2"
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.settimeout(10)
            s.connect(path)
            json.loads(s.recv(16384))                       # the greeting
            replies = []
            for cmd in commands:
                s.send(cmd.encode())
                replies.append(json.loads(s.recv(65536))[cmd])
            return replies

    def stop(self) -> str:
        rc, _ = self.live.stop()
        stderr = "\n".join(self.live.stderr_lines)
        assert rc == 0 and "Traceback" not in stderr, stderr
        return stderr


@pytest.fixture
def rplb(tmp_path):
    port = free_port()
    r = Rplb(tmp_path, prometheus=f":{port}")
    r.url = f"http://127.0.0.1:{port}/metrics"
    yield r
    if r.live.proc.poll() is None:
        r.stop()


def test_three_views_agree(rplb):
    assert any(f"prometheus metrics at {rplb.url}" in line for line in rplb.live.stderr_lines)
    ctl = rplb.wait_for_traffic()
    with urllib.request.urlopen(rplb.url, timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        prom = parse(reply.read().decode())         # the format, strictly
    tel_stats, tel_services = rplb.telemetry("/rplb/stats", "/rplb/services")

    assert ctl["events"]["to_backend"] == 8 and ctl["drops"]["malformed"] == 1
    assert ctl["events"]["passed_through"] == 1
    for side, (role, port) in enumerate((("frontend", 0), ("backend", 1))):
        for key, value in ctl["port"][side].items():
            assert metric(prom, f"rplb_port_{key}_total", port=port, role=role) == value
            assert tel_stats[role][key] == value
    for group, label, metric_name in (("drops", "reason", "rplb_drops_total"),
                                      ("events", "event", "rplb_events_total")):
        for key, value in ctl[group].items():
            assert metric(prom, metric_name, **{label: key}) == value, (group, key)
            assert tel_stats[group][key] == value, (group, key)
    assert metric(prom, "rplb_mbufs_in_use") == tel_stats["mbufs"]["in_use"] == \
        ctl["mbufs"]["in_use"]
    # A small configuration is rendered at each scrape.
    assert 0 <= metric(prom, "rplb_metrics_age_seconds") < 2

    by_name = {s["service"]: s for s in ctl["services"]}
    assert by_name["web"]["packets"] == 5 and by_name["dns"]["packets"] == 3
    assert set(tel_services) == set(by_name)
    for name, svc in by_name.items():
        labels = {"service": name, "key": svc["key"]}
        tel = tel_services[name]
        assert tel["key"] == svc["key"]
        for key in ("packets", "bytes", "new_flows"):
            assert metric(prom, f"rplb_service_{key}_total", **labels) == svc[key] == tel[key]
        assert metric(prom, "rplb_service_active_flows", **labels) == svc["active_flows"] \
            == tel["active_flows"]
        for i, b in enumerate(svc["backends"]):
            blabels = {**labels, "backend": b["backend"]}
            assert tel[f"backend/{i}/address"] == b["backend"]
            for key in ("packets", "bytes", "new_flows"):
                assert metric(prom, f"rplb_backend_{key}_total", **blabels) == b[key] \
                    == tel[f"backend/{i}/{key}"]
        assert sum(b["packets"] for b in svc["backends"]) == svc["packets"]

    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(rplb.url.replace("/metrics", "/other"), timeout=10)
    assert err.value.code == 404
    rplb.stop()
    with pytest.raises(OSError):                 # closed with rplb-dpdk
        socket.create_connection(("127.0.0.1", int(rplb.url.split(":")[2].split("/")[0])), 2)


@pytest.mark.skipif(shutil.which("dpdk-telemetry.py") is None, reason="no dpdk-telemetry.py")
def test_dpdk_telemetry_client(rplb):
    rplb.wait_for_traffic()
    proc = subprocess.run(["dpdk-telemetry.py", "-f", rplb.prefix], input="/rplb/stats\n",
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert '"/rplb/stats"' in proc.stdout and '"to_backend": 8' in proc.stdout, proc.stdout


def listening_inodes(pid: int) -> set:
    """Inodes of the TCP sockets in LISTEN state that pid holds open."""
    owned = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            owned.add(target[len("socket:["):-1])
    listening = set()
    for table in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            # TCP: state 0A is LISTEN; UDP: any bound socket (07) receives.
            if (table.startswith("tcp") and fields[3] == "0A") or table.startswith("udp"):
                listening.add(fields[9])
    return owned & listening


def test_nothing_listens_unless_asked(tmp_path):
    r = Rplb(tmp_path)
    try:
        assert listening_inodes(r.live.proc.pid) == set()
        assert not any("prometheus" in line for line in r.live.stderr_lines)
        assert r.telemetry("/rplb/stats")[0]["engine"] == "lb"   # a UNIX socket only
    finally:
        r.stop()


def test_listens_when_asked(rplb):
    assert len(listening_inodes(rplb.live.proc.pid)) == 1


@pytest.mark.parametrize("value", ["abc", "1.2.3.4:", "1.2.3.4:99999", "::1:80", ""])
def test_bad_prometheus_value(value):
    proc = run_cli(["--", "--prometheus", value])
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--prometheus" in errors[0], proc.stderr


def test_parse_address():
    assert parse_address("9100") == ("127.0.0.1", 9100)
    assert parse_address(":9100") == ("127.0.0.1", 9100)
    assert parse_address("0.0.0.0:9100") == ("0.0.0.0", 9100)
    assert parse_address("[::1]:9100") == ("::1", 9100)


def test_render_escapes_labels():
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    snap = {"uptime_s": 1.0, "ports": [], "port": [], "drops": {}, "events": {},
            "services": [{"service": 'we"b', "key": "k", "packets": 1, "bytes": 2,
                          "new_flows": 3, "active_flows": 4, "backends": []}]}
    text = render(snap)
    assert 'rplb_service_packets_total{service="we\\"b",key="k"} 1' in text
    assert metric(parse(text), "rplb_service_packets_total", service='we"b', key="k") == 1


def test_port_in_use_is_one_error_line(tmp_path):
    from harness import run_rplb
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = run_rplb(tmp_path, rplb_args=["--prometheus", f"127.0.0.1:{port}"])
    assert run.rc == 1 and "Traceback" not in run.stderr
    assert f"rplb-dpdk: error: --prometheus 127.0.0.1:{port}: cannot listen" in run.stderr


def scrape(url: str, accept_gzip: bool = True):
    """(headers, text): as Prometheus scrapes (gzip), or plain."""
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"}
                                     if accept_gzip else {})
    with urllib.request.urlopen(request, timeout=60) as reply:
        body = reply.read()
        gzipped = reply.headers["Content-Encoding"] == "gzip"
        assert gzipped == accept_gzip, reply.headers
        return reply.headers, (gzip.decompress(body) if gzipped else body).decode()


def test_a_large_configuration_is_scraped_whole(tmp_path):
    """Above CACHE_ABOVE_BACKENDS backends scrapes are answered from a
    rendering made in the background: still the whole exposition, every
    backend's series, with its age; ?max_age=0 reads the counters now."""
    from rplb.bench.control_plane import services_file
    services, backends = 210, 10
    assert services * backends > CACHE_ABOVE_BACKENDS
    config = tmp_path / "services.json"
    services_file(config, services, backends, variant=0)
    port = free_port()
    prefix = file_prefix()
    live = LiveRplb([*eal_args(prefix, ["net_null0,no-rx=1", "net_null1,no-rx=1"]), "--",
                     "--config", str(config), "--prometheus", f":{port}",
                     "--control-socket", str(tmp_path / "rplb.sock")], prefix, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        live.wait_for_stderr("forwarding with", timeout=60)
        headers, text = scrape(url)
        samples = parse(text)
        by_family = {}
        for name, labels in samples:
            by_family.setdefault(name, set()).add(labels)
        for family in ("packets_total", "bytes_total", "new_flows_total", "active_flows",
                       "weight"):
            assert len(by_family[f"rplb_backend_{family}"]) == services * backends, family
        assert len(by_family["rplb_service_packets_total"]) == services
        assert metric(samples, "rplb_backend_weight", service="s209", key="10.0.0.210:tcp:80",
                      backend="172.16.8.52:8080") == 1
        first_age = metric(samples, "rplb_metrics_age_seconds")
        # The next scrape is served from that rendering: older, the same series.
        headers, text = scrape(url, accept_gzip=False)
        again = parse(text)
        assert metric(again, "rplb_metrics_age_seconds") >= first_age
        assert float(headers["X-Rplb-Metrics-Age"]) == \
            pytest.approx(metric(again, "rplb_metrics_age_seconds"), abs=0.001)
        assert again.keys() == samples.keys()
        uptime = metric(again, "rplb_uptime_seconds")
        _, text = scrape(url + "?max_age=0")
        assert metric(parse(text), "rplb_uptime_seconds") > uptime
        _, text = scrape(url + "?backends=0")
        assert not any(name.startswith("rplb_backend") for name, _ in parse(text))
    finally:
        rc, _ = live.stop()
    assert rc == 0 and not any("Traceback" in line for line in live.stderr_lines), \
        live.stderr_lines


def test_telemetry_carries_the_first_services_dpdk_can_return():
    """/rplb/services names at most as many services as a telemetry dict
    holds (the first ones): rendering 10,000 of them every period would
    cost a third of a core for entries DPDK leaves out anyway."""
    from rplb import contract
    from rplb.telemetry import max_services, services_entries
    assert max_services() == contract.CONSTANTS["RPLB_TEL_MAX_ENTRIES"] == 256
    snapshot = {"services": [{"service": f"s{i}", "key": f"10.0.{i // 256}.{i % 256}:tcp:80",
                              "packets": i, "bytes": 0, "new_flows": 0, "active_flows": 0,
                              "backends": []} for i in range(300)]}
    groups = {group for group, _, _ in services_entries(snapshot)}
    assert groups == {f"s{i}" for i in range(256)}
