"""The health checker alone (rplb/health.py, no DPDK): thousands of
backends on one thread, probes spread over the interval, rise and fall,
and a configuration change that keeps the probes of unchanged backends.

The backends are loopback addresses (127.1.0.0/16, all of them local) with
one HTTP listener on 0.0.0.0 answering for every one, and the verdicts go
to a stand-in for the Balancer that records them."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from rplb.config import parse_config
from rplb.health import HealthChecker

BACKENDS = 2000
INTERVAL = 1.0


class Verdicts:
    """The Balancer's side of the checker: what it was told, in order."""

    def __init__(self, publish_time=0.0):
        self.lock = threading.Lock()
        self.reports = []
        self.batches = 0
        self.publish_time = publish_time
        self.state = {}

    def backend_states(self):
        return {}

    def report_health(self, reports):
        time.sleep(self.publish_time)         # as a publish waits for the workers
        with self.lock:
            lines = []
            for r in reports:
                key = (r.service, r.backend)
                if key in self.state or not r.up:     # as the Balancer's: not a first "up"
                    lines.append(f"{r.backend} {'up' if r.up else 'down'}: {r.reason}")
                self.state[key] = r
            self.reports.extend(reports)
            self.batches += 1
        return lines

    def latest(self):
        with self.lock:
            return dict(self.state)


class Backends:
    """One HTTP server for every backend address (asyncio, in a thread of
    its own: a thread per connection could not answer 2,000 probes a
    second here): it answers self.status to any request, and keeps the
    time of each."""

    def __init__(self):
        self.status = 200
        self.seen = []
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        async def answer(reader, writer):
            try:
                await reader.readline()
                self.seen.append(time.monotonic())
                writer.write(f"HTTP/1.0 {self.status} X\r\nContent-Length: 0\r\n\r\n"
                             .encode())
                await writer.drain()
                writer.close()
            except OSError:
                pass            # a probe resets the connection once it has the status

        def run():
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(
                asyncio.start_server(answer, "0.0.0.0", 0, backlog=4096))
            self.port = self.server.sockets[0].getsockname()[1]
            started.set()
            self.loop.run_forever()
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        started.wait()

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


@pytest.fixture
def backends():
    server = Backends()
    yield server
    server.close()


def config(port, n=BACKENDS, path="/healthz"):
    return parse_config({
        "health_checks": {"source": "127.1.0.1/16"},
        "services": [{"name": "many", "vip": "10.0.0.100", "proto": "tcp", "port": 80,
                      "health": {"type": "http", "path": path, "interval": INTERVAL,
                                 "timeout": 0.9, "rise": 2, "fall": 2},
                      "backends": [{"ip": f"127.1.{1 + i // 250}.{1 + i % 250}", "port": port}
                                   for i in range(n)]}]})


def wait_until(what, predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


def test_thousands_of_backends_on_one_thread_spread_over_the_interval(backends):
    verdicts = Verdicts(publish_time=0.02)
    settings = config(backends.port)
    lines = []
    checker = HealthChecker(verdicts, settings.health_checks, log=lines.append,
                            bind_to_interface=False)
    start = time.monotonic()
    checker.start(settings)
    try:
        # The first verdict of every backend, within about one interval.
        wait_until("every backend was checked once",
                   lambda: len(verdicts.latest()) == BACKENDS, timeout=4 * INTERVAL)
        first_round = time.monotonic() - start
        wrong = [r for r in verdicts.latest().values()
                 if not r.up or r.reason != "HTTP 200, first check"]
        assert not wrong, wrong[:5]
        # One thread for the probes, one that reports: not one per check.
        assert sorted(t.name for t in threading.enumerate() if t.name.startswith("rplb")) == \
            ["rplb-health", "rplb-health-report_0"]
        assert checker.checked == BACKENDS
        # Jitter: the first round's probes are spread over the interval,
        # not sent together: every tenth of it saw some, none a third.
        seen = [t - start for t in backends.seen[:BACKENDS]]
        tenths = [sum(1 for t in seen if i / 10 <= t / INTERVAL < (i + 1) / 10)
                  for i in range(10)]
        assert min(tenths) > 0 and max(tenths) < BACKENDS / 3, tenths
        # What comes in while a publish runs waits for the next: one
        # publish per 20 ms at most, not one per verdict.
        assert verdicts.batches <= (time.monotonic() - start) / 0.02 + 1, verdicts.batches
        assert lines == []

        # Wrong status: all down after fall checks, one line each.
        backends.status = 503
        down_at = time.monotonic()
        wait_until("every backend is down",
                   lambda: sum(not r.up for r in verdicts.latest().values()) == BACKENDS,
                   timeout=2 * INTERVAL * 1.05 + 2)
        took = time.monotonic() - down_at
        assert took <= 2 * INTERVAL * 1.05 + 1, took
        assert len(lines) == BACKENDS
        assert all(r.reason == "HTTP 503 (expected 200), 2 checks in a row"
                   for r in verdicts.latest().values())
    finally:
        checker.close()
    print(f"\n{BACKENDS} backends: first round {first_round:.2f} s, all down in {took:.2f} s")
    assert not [t for t in threading.enumerate() if t.name.startswith("rplb")]


def test_an_update_keeps_the_probes_of_unchanged_backends(backends):
    verdicts = Verdicts()
    settings = config(backends.port, n=10)
    checker = HealthChecker(verdicts, settings.health_checks, log=lambda line: None,
                            bind_to_interface=False)
    checker.start(settings)
    try:
        wait_until("first verdicts", lambda: len(verdicts.latest()) == 10, timeout=5)
        tasks = {key: target.task for key, target in checker._targets.items()}
        # Same checks, one backend fewer: the others' probes go on.
        checker.update(config(backends.port, n=9))
        wait_until("the update", lambda: checker.checked == 9, timeout=5)
        assert all(checker._targets[key].task is tasks[key] for key in checker._targets)
        # Another path is another check: new probes.
        checker.update(config(backends.port, n=9, path="/other"))
        wait_until("the second update",
                   lambda: all(t.check.path == "/other" for t in checker._targets.values()),
                   timeout=5)
        assert not any(checker._targets[key].task is tasks[key] for key in checker._targets)
    finally:
        checker.close()


def test_a_closed_port_is_refused_at_once():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # nobody listens there now
    verdicts = Verdicts()
    settings = config(port, n=3)
    checker = HealthChecker(verdicts, settings.health_checks, log=lambda line: None,
                            bind_to_interface=False)
    checker.start(settings)
    try:
        wait_until("verdicts", lambda: len(verdicts.latest()) == 3, timeout=5)
        assert all(not r.up and r.reason == "connection refused, first check"
                   for r in verdicts.latest().values())
    finally:
        checker.close()
