"""rplb-bench's control-plane case (--only control): a running rplb-dpdk
with 10,000 services, changed through its control socket as an operator
does.

Measured, each through the real interfaces (rplbctl's socket protocol,
DPDK's telemetry socket, the Prometheus endpoint):
  - the start with the whole services file (process start to "forwarding");
  - full reloads: every service changed (other backends: every Maglev
    table rebuilt), end to end (the `reload` request until its reply);
  - one backend added, one weight changed: the request until its reply,
    with all the services loaded (median and 90th percentile), once the
    Prometheus endpoint stopped rendering ahead for the readers;
  - how long status, DPDK telemetry (/rplb/stats) and Prometheus take to
    answer, idle and while a full reload is being built (Prometheus as a
    Prometheus server scrapes: gzip accepted, the whole body read), with
    the age of the counters each scrape carried;
  - one scrape decompressed and checked whole, and a scrape without gzip.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import re
import signal
import socket
import statistics
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List, Optional

SERVICES = 10000
BACKENDS_PER_SERVICE = 10
EDITS = 50
RELOADS = 3
FLOW_TABLE_SIZE = 65536
# The goals (docs/performance.md).
TARGETS = {"edit_ms_median": 20.0, "full_load_s": 10.0, "reader_ms_during_reload": 50.0}


def services_file(path: Path, services: int, backends: int, variant: int) -> None:
    """A JSON services file (the fast form for large configurations):
    services on 10.0.0.0/8, backends on 172.16.0.0/12, each variant on other
    backend addresses, so a reload from one variant to another changes
    every service."""
    first_vip = int(ipaddress.IPv4Address("10.0.0.1"))
    first_backend = int(ipaddress.IPv4Address("172.16.0.1")) + variant * services * backends
    lines = []
    for i in range(services):
        vip = str(ipaddress.IPv4Address(first_vip + i))
        base = first_backend + i * backends
        backend_list = ", ".join(
            f'{{"ip": "{ipaddress.IPv4Address(base + j)}", "port": 8080, "weight": 1}}'
            for j in range(backends))
        lines.append(f'{{"name": "s{i}", "vip": "{vip}", "proto": "tcp", "port": 80, '
                     f'"backends": [{backend_list}]}}')
    path.write_text(f'{{"flow_table_size": {FLOW_TABLE_SIZE}, "services": [\n  '
                    + ",\n  ".join(lines) + "\n]}\n")


class _Daemon:
    """rplb-dpdk on two net_null ports with a control socket and Prometheus."""

    def __init__(self, workdir: Path, config: Path, command: List[str], prefix: str):
        self.socket = str(workdir / "rplb.sock")
        self.prefix = prefix
        argv = [*command, "--no-huge", "-m", "1024", "--no-pci", "-l", "0-1",
                "--file-prefix", prefix, "--log-level=*:warning",
                "--vdev", "net_null0,no-rx=1", "--vdev", "net_null1,no-rx=1",
                "--", "--config", str(config), "--control-socket", self.socket,
                "--prometheus", "127.0.0.1:0"]
        self.lines: List[str] = []
        self.scrape_ages_s: List[float] = []
        self._seen = threading.Condition()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, cwd=workdir)
        threading.Thread(target=self._read, daemon=True).start()
        self.ready_s = self._wait_for("forwarding with", 300) - self.started
        match = re.search(r"prometheus metrics at (\S+)", "\n".join(self.lines))
        self.metrics_url = match.group(1) if match else None

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self._seen:
                self.lines.append(line.rstrip("\n"))
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    def _wait_for(self, needle: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        with self._seen:
            while not any(needle in line for line in self.lines):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"rplb-dpdk did not log {needle!r}:\n"
                                       + "\n".join(self.lines[-8:]))
                self._seen.wait(0.1)
        return time.monotonic()

    def request(self, req: dict, timeout: float = 120) -> dict:
        from rplb.control import request
        reply = request(self.socket, req, timeout=timeout)
        if not reply.get("ok"):
            raise RuntimeError(f"{req['cmd']}: {reply.get('error')}")
        return reply

    def telemetry(self, command: str = "/rplb/stats") -> dict:
        path = f"/var/run/dpdk/{self.prefix}/dpdk_telemetry.v2"
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            sock.settimeout(10)
            sock.connect(path)
            sock.recv(1 << 16)                        # the greeting
            sock.send(command.encode())
            return json.loads(sock.recv(1 << 20))

    def metrics(self) -> int:
        """One scrape as Prometheus makes it (gzip accepted, the body read
        whole, not decompressed: Prometheus does that on its side); the
        age of its counters goes to scrape_ages_s.  Returns the bytes read."""
        request = urllib.request.Request(self.metrics_url,
                                         headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request, timeout=60) as response:
            body = response.read()
            self.scrape_ages_s.append(float(response.headers["X-Rplb-Metrics-Age"]))
        return len(body)

    def check_metrics(self) -> dict:
        """One fresh scrape (?max_age=0), decompressed and counted: sizes,
        samples per family; and the time of a scrape without gzip."""
        request = urllib.request.Request(self.metrics_url + "?max_age=0",
                                         headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request, timeout=60) as response:
            encoding = response.headers.get("Content-Encoding")
            body = response.read()
        text = gzip.decompress(body) if encoding == "gzip" else body
        samples: Dict[str, int] = {}
        for line in text.splitlines():
            if line and not line.startswith(b"#"):
                name = line.split(b"{", 1)[0].split(b" ", 1)[0].decode()
                samples[name] = samples.get(name, 0) + 1
        plain_ms = []
        for _ in range(3):
            start = time.perf_counter()
            with urllib.request.urlopen(self.metrics_url, timeout=60) as response:
                response.read()
            plain_ms.append((time.perf_counter() - start) * 1e3)
        return {"encoding": encoding, "wire_bytes": len(body), "text_bytes": len(text),
                "samples": sum(samples.values()), "samples_by_family": samples,
                "last_line": text.rstrip(b"\n").rsplit(b"\n", 1)[-1].decode(),
                "plain_ms": _summary(plain_ms)}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1e3


def _summary(samples: List[float]) -> dict:
    ordered = sorted(samples)
    return {"median": round(statistics.median(ordered), 2),
            "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 2),
            "max": round(ordered[-1], 2), "n": len(ordered)}


# A Prometheus scrape of 100,000 backends is some 55 MB of text: scraped
# once a second at most (Prometheus's own default is every 15 s), not to
# load the process being measured.
PROMETHEUS_PERIOD = 1.0
# After the last scrape, beyond two periods: a rendering under way ends.
QUIET_S = 3.0


def _probe_readers(daemon: _Daemon, stop: threading.Event, pause: float) -> Dict[str, list]:
    """Each reader in turn until stop, with pause seconds between rounds
    (Prometheus every PROMETHEUS_PERIOD): {reader: [ms, ...]}."""
    readers = {"status": lambda: daemon.request({"cmd": "status"}),
               "telemetry": daemon.telemetry,
               "prometheus": daemon.metrics}
    samples: Dict[str, list] = {name: [] for name in readers}
    next_scrape = time.monotonic()
    while not stop.is_set():
        for name, read in readers.items():
            if name == "prometheus":
                if daemon.metrics_url is None or time.monotonic() < next_scrape:
                    continue
                next_scrape = time.monotonic() + PROMETHEUS_PERIOD
            samples[name].append(_timed(read))
            if stop.is_set():
                break
        stop.wait(pause)
    return samples


def control_plane_report(workdir: Path, command: List[str], prefix: str,
                         services: int = SERVICES, backends: int = BACKENDS_PER_SERVICE,
                         edits: int = EDITS, reloads: int = RELOADS,
                         log: Callable[[str], None] = print) -> dict:
    """The control-plane case (see the module docstring); figures in ms or s."""
    files = [workdir / "scale-a.json", workdir / "scale-b.json"]
    for variant, path in enumerate(files):
        services_file(path, services, backends, variant)
    config = workdir / "services.json"
    config.write_bytes(files[0].read_bytes())
    log(f"control plane: starting rplb-dpdk with {services:,} services x {backends} backends")
    daemon = _Daemon(workdir, config, command, prefix)
    out: dict = {"services": services, "backends": services * backends,
                 "start_to_forwarding_s": round(daemon.ready_s, 2)}
    try:
        idle_stop = threading.Event()
        timer = threading.Timer(3.0, idle_stop.set)
        timer.start()
        idle = _probe_readers(daemon, idle_stop, 0.05)
        out["readers_idle_ms"] = {k: _summary(v) for k, v in idle.items() if v}

        log(f"control plane: {reloads} full reloads (every service changed)")
        reload_s: List[float] = []
        during: Dict[str, list] = {}
        for i in range(reloads):
            config.write_bytes(files[(i + 1) % 2].read_bytes())
            stop = threading.Event()
            results: Dict[str, list] = {}
            prober = threading.Thread(
                target=lambda: results.update(_probe_readers(daemon, stop, 0.02)))
            prober.start()
            try:
                reload_s.append(_timed(lambda: daemon.request({"cmd": "reload"})) / 1e3)
            finally:
                stop.set()
                prober.join()
            for name, values in results.items():
                during.setdefault(name, []).extend(values)
        out["full_reload_s"] = {"median": round(statistics.median(reload_s), 2),
                                "runs": [round(s, 2) for s in reload_s]}
        out["readers_during_reload_ms"] = {k: _summary(v) for k, v in during.items() if v}

        # The edits are measured alone: the endpoint renders ahead of the
        # scrapes it expects until a scraper missed one by an interval
        # (rplb/prometheus.py, plan_rendering), and would otherwise still
        # render for the prober that just stopped.
        time.sleep(2 * PROMETHEUS_PERIOD + QUIET_S)
        log(f"control plane: {edits} weight changes and {edits} backend additions, in turn")
        weight_ms, add_ms, remove_ms = [], [], []
        variant = reloads % 2
        first_backend = int(ipaddress.IPv4Address("172.16.0.1")) + variant * services * backends
        first_new = int(ipaddress.IPv4Address("192.168.0.1"))
        added = []
        # In turn, so that both kinds meet the same conditions (the first
        # edits after a full reload are slower: docs/performance.md).
        for i in range(edits):
            s = (i * 7919) % services
            ip = str(ipaddress.IPv4Address(first_backend + s * backends))
            weight_ms.append(_timed(lambda: daemon.request(
                {"cmd": "backend.set-weight", "service": f"s{s}", "ip": ip, "port": 8080,
                 "weight": 2 + i % 5})))
            s = (i * 104729) % services
            ip = str(ipaddress.IPv4Address(first_new + i))
            add_ms.append(_timed(lambda: daemon.request(
                {"cmd": "backend.add", "service": f"s{s}", "ip": ip, "port": 9090})))
            added.append((s, ip))
        for s, ip in added:
            remove_ms.append(_timed(lambda: daemon.request(
                {"cmd": "backend.del", "service": f"s{s}", "ip": ip, "port": 9090})))
        out["edit_ms"] = {"set_weight": _summary(weight_ms), "backend_add": _summary(add_ms),
                          "backend_del": _summary(remove_ms)}
        status = daemon.request({"cmd": "status"})
        out["loaded"] = {"services": status["services"], "backends": status["backends"]}
        if daemon.metrics_url is not None and daemon.scrape_ages_s:
            out["prometheus"] = daemon.check_metrics()
            out["prometheus"]["age_s"] = _summary(daemon.scrape_ages_s)
    finally:
        daemon.stop()
    out["targets"] = evaluate(out)
    return out


def evaluate(out: dict) -> List[dict]:
    checks = []

    def add(name: str, value: Optional[float], goal: float) -> None:
        if value is not None:
            checks.append({"target": name, "value": value, "goal": f"<= {goal}",
                           "met": value <= goal})
    edits = out.get("edit_ms", {})
    for kind in ("set_weight", "backend_add"):
        if kind in edits:
            add(f"{kind}_ms_median_{out['services']}_services", edits[kind]["median"],
                TARGETS["edit_ms_median"])
    if "full_reload_s" in out:
        add(f"full_reload_s_{out['services']}_services", out["full_reload_s"]["median"],
            TARGETS["full_load_s"])
    for reader, summary in out.get("readers_during_reload_ms", {}).items():
        add(f"{reader}_ms_during_reload_max", summary["max"],
            TARGETS["reader_ms_during_reload"])
    return checks


def format_report(out: dict) -> List[str]:
    lines = [f"control plane, {out['services']:,} services x "
             f"{out['backends'] // out['services']} backends ({out['backends']:,}):"]
    lines.append(f"  start to forwarding {out['start_to_forwarding_s']} s; full reload "
                 f"(every service changed) median {out['full_reload_s']['median']} s "
                 f"(runs {out['full_reload_s']['runs']})")
    for kind, s in out["edit_ms"].items():
        lines.append(f"  {kind.replace('_', ' ')}: median {s['median']} ms, "
                     f"p90 {s['p90']} ms, max {s['max']} ms ({s['n']} requests)")
    for title, key in (("idle", "readers_idle_ms"), ("during reloads", "readers_during_reload_ms")):
        parts = [f"{name} median {s['median']} / max {s['max']} ms"
                 for name, s in out[key].items()]
        lines.append(f"  readers {title}: " + "; ".join(parts))
    lines.append(f"  loaded at the end: {out['loaded']['services']:,} services, "
                 f"{out['loaded']['backends']:,} backends")
    prometheus = out.get("prometheus")
    if prometheus:
        lines.append(f"  prometheus scrape: {prometheus['samples']:,} samples, "
                     f"{prometheus['text_bytes'] / 1e6:.1f} MB of text, "
                     f"{prometheus['wire_bytes'] / 1e6:.1f} MB sent ({prometheus['encoding']}); "
                     f"counters' age median {prometheus['age_s']['median']} / "
                     f"max {prometheus['age_s']['max']} s ({prometheus['age_s']['n']} scrapes); "
                     f"without gzip median {prometheus['plain_ms']['median']} ms")
    return lines
