"""Health checks: every backend of every service with a ``health`` check is
probed from the appliance's own address on the backend network (its
kernel interface, rplb.kernel_interface), and what the probes find is
reported to the Balancer, which takes a backend that is down out of its
service's Maglev table.

One thread runs an asyncio event loop (epoll): each checked backend is a
coroutine that sleeps between its probes, so thousands of backends cost
thousands of small objects, not threads.  A backend's first probe comes at
a random point of its first interval and each interval after varies by up
to INTERVAL_JITTER, so probes do not go out in lockstep.  Probes use
kernel sockets bound to the appliance's address and its interface
(SO_BINDTODEVICE): they leave through the kernel interface even where the
host has another route to the backends' network.

    tcp   the connection is accepted (then reset: no TIME_WAIT is left
          on either side);
    http  GET path answers with a status in expect (the status line is
          all that is read);
    udp   payload sent, a datagram that contains reply comes back within
          the timeout (an ICMP port unreachable fails it at once).

A backend's state changes after rise successes (to up) or fall failures
(to down) in a row; a backend never checked yet takes the first verdict at
once.  Verdicts are handed to the Balancer in batches from a thread of
their own (a publish waits for the workers): a thousand backends going
down together republish once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import random
import resource
import socket
import struct
import threading
from typing import Callable, Dict, List, Optional, Tuple

from rplb.balancer import HealthReport, ident
from rplb.config import Backend, Config, Health, HealthChecks, ServiceKey

__all__ = ["HealthChecker", "INTERVAL_JITTER", "probe"]

#: Each interval after the first is the configured one times 1 +- this.
INTERVAL_JITTER = 0.05
#: Bytes of an HTTP answer read at most to find its status line.
HTTP_STATUS_LINE_MAX = 4096
#: File descriptors kept free for the rest of rplb (control socket,
#: Prometheus, logs) when the number of probes at once is bounded.
RESERVED_FDS = 256
MAX_PROBES_AT_ONCE = 8192
# linux/in.h; not in every Python's socket module.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

Key = Tuple[ServiceKey, Tuple[int, int]]


class _Source:
    """Where probes come from: the appliance's address, bound to its
    interface."""

    def __init__(self, address: str, interface: Optional[str]):
        self.address = address
        self.interface = interface

    def socket(self, kind: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            if self.interface is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                                self.interface.encode())
            if kind == socket.SOCK_STREAM:
                # The port is chosen at connect(), by the whole 4-tuple:
                # bound first, every probe would need a port of its own
                # from the ephemeral range, which thousands exhaust.
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                # Closed with a reset: no TIME_WAIT left behind per probe.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.bind((self.address, 0))
        except BaseException:
            sock.close()
            raise
        return sock


def _reason(err: BaseException) -> str:
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, ConnectionResetError):
        return "connection reset"
    if isinstance(err, OSError) and err.errno is not None:
        return errno.errorcode.get(err.errno, str(err.errno)).lower() + \
            (f" ({err.strerror})" if err.strerror else "")
    return f"{type(err).__name__}: {err}"


async def _tcp(loop, source: _Source, address, check: Health) -> Tuple[bool, str]:
    with source.socket(socket.SOCK_STREAM) as sock:
        await loop.sock_connect(sock, address)
        return True, "connected"


async def _http(loop, source: _Source, address, check: Health) -> Tuple[bool, str]:
    host = f"{address[0]}:{address[1]}"
    request = (f"GET {check.path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: rplb-health-check\r\n"
               "Connection: close\r\n\r\n").encode()
    with source.socket(socket.SOCK_STREAM) as sock:
        await loop.sock_connect(sock, address)
        await loop.sock_sendall(sock, request)
        answer = b""
        while b"\r\n" not in answer and len(answer) < HTTP_STATUS_LINE_MAX:
            chunk = await loop.sock_recv(sock, HTTP_STATUS_LINE_MAX - len(answer))
            if not chunk:
                break
            answer += chunk
    line = answer.split(b"\r\n", 1)[0]
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        shown = line[:40].decode("ascii", "replace")
        return False, f"not an HTTP answer ({shown!r})" if line else "no HTTP answer"
    status = int(parts[1])
    if status in check.expect:
        return True, f"HTTP {status}"
    expected = ", ".join(map(str, check.expect))
    return False, f"HTTP {status} (expected {expected})"


async def _udp(loop, source: _Source, address, check: Health) -> Tuple[bool, str]:
    want = check.reply.encode()
    with source.socket(socket.SOCK_DGRAM) as sock:
        sock.connect(address)          # replies from elsewhere are not ours
        await loop.sock_sendall(sock, check.payload.encode())
        while True:
            data = await loop.sock_recv(sock, 65536)
            if want in data:
                return True, "reply received"


_PROBES = {"tcp": _tcp, "http": _http, "udp": _udp}


async def probe(source: _Source, address: Tuple[str, int], check: Health) -> Tuple[bool, str]:
    """One probe of address by check: (passed, what it found)."""
    loop = asyncio.get_running_loop()
    attempt = _PROBES[check.type](loop, source, address, check)
    try:
        if hasattr(asyncio, "timeout"):
            # Python 3.11's wait_for swallows a cancellation that meets the
            # probe's end (gh-86296): a probe cancelled then would live on.
            async with asyncio.timeout(check.timeout):
                return await attempt
        return await asyncio.wait_for(attempt, check.timeout)
    except asyncio.TimeoutError:
        if check.type == "udp":
            return False, f"no reply within {check.timeout:g} s"
        return False, f"no answer within {check.timeout:g} s"
    except ConnectionRefusedError:
        return False, ("port unreachable" if check.type == "udp" else "connection refused")
    except OSError as err:
        return False, _reason(err)


class _Target:
    """One checked backend of one service."""

    __slots__ = ("key", "service", "address", "check", "task")

    def __init__(self, key: Key, service: str, address: Tuple[str, int], check: Health):
        self.key = key
        self.service = service
        self.address = address
        self.check = check
        self.task: Optional[asyncio.Task] = None

    def same(self, other: "_Target") -> bool:
        return self.address == other.address and self.check == other.check


def _targets(config: Config) -> Dict[Key, _Target]:
    out: Dict[Key, _Target] = {}
    for service in config.services:
        check = service.health
        if check is None:
            continue
        for backend in service.backends:
            key = (service.key, ident(backend))
            out[key] = _Target(key, service.label, _address(backend, check), check)
    return out


def _address(backend: Backend, check: Health) -> Tuple[str, int]:
    return (str(backend.ip), check.port if check.port is not None else backend.port)


class HealthChecker:
    """Checks the backends of a running Balancer.

    start(config) starts the thread; update(config) (any thread, returns at
    once) follows a changed configuration, keeping the probes and counts of
    the backends whose check did not change; close() stops it
    (idempotent).  log: one line per state change."""

    def __init__(self, balancer, settings: HealthChecks, log: Callable[[str], None],
                 bind_to_interface: bool = True):
        self._balancer = balancer
        self._source = _Source(str(settings.source.ip),
                               settings.interface if bind_to_interface else None)
        self._log = log
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()
        self._targets: Dict[Key, _Target] = {}
        self._pending: Dict[Key, HealthReport] = {}
        self._reporting = False
        self._reporter = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="rplb-health-report")
        self._random = random.Random()
        self._limit: Optional[asyncio.Semaphore] = None
        self._stopping = False
        self.probes = 0                  # probes started (for tests and status)

    # ---- life cycle ----------------------------------------------------------

    def start(self, config: Config) -> None:
        if self._source.interface is not None:
            try:
                self._source.socket(socket.SOCK_DGRAM).close()
            except PermissionError:
                # SO_BINDTODEVICE needs CAP_NET_RAW: without it, probes
                # follow the routing table (usually to the same interface).
                self._log(f"health: warning: cannot bind probes to {self._source.interface} "
                          "(no CAP_NET_RAW): they follow the routing table")
                self._source.interface = None
        self._thread = threading.Thread(target=self._run, name="rplb-health", daemon=True)
        self._thread.start()
        self._ready.wait()
        self.update(config)

    def update(self, config: Config) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._reconcile, _targets(config))
            except RuntimeError:           # closed meanwhile
                pass

    def close(self) -> None:
        self._stopping = True
        loop, self._loop = self._loop, None
        if loop is not None and self._thread is not None:
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:
                pass
            self._thread.join(timeout=10)
        self._thread = None
        self._reporter.shutdown(wait=True)

    @property
    def checked(self) -> int:
        """Backends checked now."""
        return len(self._targets)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._limit = asyncio.Semaphore(_probes_at_once())
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            for target in self._targets.values():
                if target.task is not None:
                    target.task.cancel()
            tasks = [t.task for t in self._targets.values() if t.task is not None]
            if tasks:
                # Bounded: a task that missed its cancellation still sees
                # _stopping at its next turn.
                loop.run_until_complete(asyncio.wait(tasks, timeout=5))
            loop.close()

    # ---- targets (on the loop's thread) --------------------------------------

    def _reconcile(self, wanted: Dict[Key, _Target]) -> None:
        states = self._balancer.backend_states()
        for key in [k for k in self._targets if k not in wanted]:
            target = self._targets.pop(key)
            target.task.cancel()
            self._pending.pop(key, None)
        for key, target in wanted.items():
            current = self._targets.get(key)
            if current is not None and current.same(target):
                current.service = target.service
                continue
            if current is not None:
                current.task.cancel()
                self._pending.pop(key, None)
            state = states.get(key[0], {}).get(key[1])
            health = state.health if state is not None else "unknown"
            target.task = self._loop.create_task(self._watch(target, health))
            self._targets[key] = target

    async def _watch(self, target: _Target, health: str) -> None:
        """Probe target every interval; report when its state changes."""
        loop = asyncio.get_running_loop()
        check = target.check
        passed_in_row = failed_in_row = 0
        start = loop.time() + self._random.uniform(0, check.interval)
        while not self._stopping:
            await asyncio.sleep(max(0.0, start - loop.time()))
            start = loop.time()
            async with self._limit:
                self.probes += 1
                passed, found = await probe(self._source, target.address, check)
            if passed:
                passed_in_row, failed_in_row = passed_in_row + 1, 0
            else:
                passed_in_row, failed_in_row = 0, failed_in_row + 1
            new = health
            if health == "unknown":
                new = "up" if passed else "down"
            elif health == "down" and passed_in_row >= check.rise:
                new = "up"
            elif health == "up" and failed_in_row >= check.fall:
                new = "down"
            if new != health:
                in_row = passed_in_row if passed else failed_in_row
                reason = found if in_row == 1 else f"{found}, {in_row} checks in a row"
                if health == "unknown":
                    reason = f"{found}, first check"
                health = new
                self._report(HealthReport(target.key[0], target.key[1], passed, reason))
            start += check.interval * self._random.uniform(1 - INTERVAL_JITTER,
                                                           1 + INTERVAL_JITTER)

    # ---- reporting -------------------------------------------------------------

    def _report(self, report: HealthReport) -> None:
        self._pending[(report.service, report.backend)] = report
        if not self._reporting:
            self._reporting = True
            self._loop.call_soon(self._send_pending)

    def _send_pending(self) -> None:
        """Hand what is pending to the Balancer from the reporter thread (a
        publish blocks until the workers moved on); what piles up meanwhile
        goes in the next batch."""
        if not self._pending or self._loop is None:
            self._reporting = False
            return
        batch, self._pending = list(self._pending.values()), {}
        future = self._loop.run_in_executor(self._reporter, self._balancer.report_health, batch)
        future.add_done_callback(lambda done: self._sent(done, batch))

    def _sent(self, done: asyncio.Future, batch: List[HealthReport]) -> None:
        try:
            lines = done.result()
        except Exception as err:      # the tables could not be published: retry
            self._log(f"health: cannot apply {len(batch)} state changes, retrying in 1 s: "
                      f"{err}")
            for report in batch:
                self._pending.setdefault((report.service, report.backend), report)
            if self._loop is not None:
                self._loop.call_later(1.0, self._send_pending)
            return
        for line in lines:
            self._log(f"health: {line}")
        self._send_pending()


def _probes_at_once() -> int:
    """As many probes at once as file descriptors allow (raising the soft
    limit to the hard one), at most MAX_PROBES_AT_ONCE: a probe refused a
    descriptor would fail, and mark a good backend down."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return max(16, min(MAX_PROBES_AT_ONCE, soft - RESERVED_FDS))
