"""A Prometheus endpoint: GET /metrics in the text exposition format 0.0.4
(rplb-dpdk --prometheus).  Off unless asked: rplb listens on no network
address by default.

A scrape has one line per service and per backend for each of their
families: with 100,000 backends more than half a million lines, some
55 MB.  So that it answers within tens of milliseconds whatever the
control plane is doing (docs/observability.md, docs/performance.md):

- Each service's and backend's labels are rendered once, when the service
  changes (LabelCache); C writes the lines without the GIL
  (csrc/metrics_text.c); Python only gathers the values.
- A scraper that accepts gzip (Prometheus does) gets the text compressed,
  a tenth of the size or less.
- A configuration of more than CACHE_ABOVE_BACKENDS backends is rendered
  ahead of its scrapes, in the background (Renderer), and a scrape is
  answered from the latest rendering while that is at most max_age old
  (MAX_AGE_S, or the scrape's ?max_age=S); the gauge
  rplb_metrics_age_seconds (and the header X-Rplb-Metrics-Age) says how
  old.  Smaller ones are rendered at each scrape.

?backends=0 leaves out the per-backend families: a service-level view of
a large configuration, for a Prometheus that need not store half a
million series.
"""

from __future__ import annotations

import argparse
import itertools
import math
import socket
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from operator import itemgetter
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import parse_qs

from rplb.gc_control import quiet_gc

if TYPE_CHECKING:
    import numpy as np

# numpy and rplb.dataplane are imported where they are used: rplb-dpdk
# parses --prometheus with parse_address before it blocks its signals,
# and importing numpy starts a thread, where a SIGINT would then land
# (rplb/cli.py, run).

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_HOST = "127.0.0.1"

# Above this many backends a configuration is rendered ahead of its
# scrapes: a rendering then takes more than a few milliseconds
# (docs/performance.md), and an answer that waits for it is a slow one.
CACHE_ABOVE_BACKENDS = 2000
# How old a rendering a scrape accepts by default (?max_age=S otherwise).
MAX_AGE_S = 5.0


def parse_address(text: str) -> Tuple[str, int]:
    """ADDR:PORT, :PORT or PORT (ADDR 127.0.0.1); [v6]:PORT for IPv6.
    An argparse type: a bad value is one error line, exit 2."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = "", text.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise argparse.ArgumentTypeError(
            f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:9100")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not ADDR:PORT, :PORT or PORT (a port 0..65535), e.g. 127.0.0.1:9100")
    return host or DEFAULT_HOST, int(port)


def escape_label(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _family_header(name: str, kind: str, help_text: str) -> str:
    return f"# HELP {name} {_escape_help(help_text)}\n# TYPE {name} {kind}\n"


class _Families:
    """The small families (a sample per port, drop reason, event, ...),
    rendered in Python: in first-seen order, samples under their family."""

    def __init__(self):
        self._order: List[str] = []
        self._meta: Dict[str, Tuple[str, str]] = {}
        self._samples: Dict[str, List[str]] = {}

    def add(self, name: str, kind: str, help_text: str, value, **labels) -> None:
        if name not in self._meta:
            self._order.append(name)
            self._meta[name] = (kind, help_text)
            self._samples[name] = []
        label_text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
        self._samples[name].append(f"{name}{{{label_text}}} {value}" if label_text
                                   else f"{name} {value}")

    def text(self) -> bytes:
        return "".join(_family_header(name, *self._meta[name])
                       + "".join(f"{line}\n" for line in self._samples[name])
                       for name in self._order).encode()


_PORT_HELP = {"rx_packets": "Packets received by the fast path on the port",
              "rx_bytes": "Bytes received by the fast path on the port",
              "tx_packets": "Packets sent by the fast path on the port",
              "tx_bytes": "Bytes sent by the fast path on the port",
              "tx_dropped": "Packets the port did not accept for sending"}
_FLOW_HELP = {"packets": "Packets (both directions)", "bytes": "Bytes (both directions)",
              "new_flows": "Flows created", "active_flows": "Flows currently tracked"}


@dataclass(frozen=True)
class RowFamily:
    """A family with one sample per row of a label table (a service, a
    backend): its value is the row's `field` in the snapshot.  A new
    per-service or per-backend series is one more of these."""
    name: str
    kind: str
    help_text: str
    field: str
    # A gauge of flows can read below zero for a moment (a flow ends on
    # one worker before another's start is counted): shown as 0.
    at_least_zero: bool = False


SERVICE_FAMILIES = (
    RowFamily("rplb_service_packets_total", "counter", f"{_FLOW_HELP['packets']} of the service",
              "packets"),
    RowFamily("rplb_service_bytes_total", "counter", f"{_FLOW_HELP['bytes']} of the service",
              "bytes"),
    RowFamily("rplb_service_new_flows_total", "counter",
              f"{_FLOW_HELP['new_flows']} of the service", "new_flows"),
    RowFamily("rplb_service_active_flows", "gauge", "Flows of the service currently tracked",
              "active_flows", at_least_zero=True),
)
BACKEND_FAMILIES = (
    RowFamily("rplb_backend_packets_total", "counter", f"{_FLOW_HELP['packets']} of the backend",
              "packets"),
    RowFamily("rplb_backend_bytes_total", "counter", f"{_FLOW_HELP['bytes']} of the backend",
              "bytes"),
    RowFamily("rplb_backend_new_flows_total", "counter",
              f"{_FLOW_HELP['new_flows']} of the backend", "new_flows"),
    RowFamily("rplb_backend_active_flows", "gauge", "Flows of the backend currently tracked",
              "active_flows", at_least_zero=True),
    RowFamily("rplb_backend_weight", "gauge", "Maglev weight of the backend (0: drained)",
              "weight"),
    RowFamily("rplb_backend_up", "gauge", "1 while the backend is up (its health check "
              "passes, or it has none, and it is not disabled), 0 while it is down", "up"),
)

AGE_FAMILY = ("rplb_metrics_age_seconds", "gauge",
              "Seconds since the counters of this scrape were read (a large configuration's "
              "scrape is rendered ahead of time)")


@dataclass(frozen=True)
class LabelTable:
    """The label sets of many rows, each rendered once, braces included
    ('{service="web",key="10.0.0.1:tcp:80"}'): row i is
    text[offsets[i]:offsets[i + 1]]."""
    text: bytes
    offsets: np.ndarray             # uint64, rows + 1

    @property
    def rows(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def of(cls, blocks: Sequence[bytes], lengths) -> "LabelTable":
        """From label sets rendered back to back in blocks, and each set's
        length (an iterable of ints)."""
        import numpy as np
        lengths = np.fromiter(lengths, dtype=np.uint64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.uint64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(b"".join(blocks), offsets)


@dataclass(frozen=True)
class _ServiceLabels:
    service: bytes                  # the service's label set
    backends: bytes                 # its backends' label sets, back to back
    backend_lengths: Tuple[int, ...]


def _service_labels(identity: tuple) -> _ServiceLabels:
    name, key, backends = identity
    common = f'service="{escape_label(name)}",key="{escape_label(key)}"'
    backend_sets = [f'{{{common},backend="{escape_label(b)}"}}'.encode() for b in backends]
    return _ServiceLabels(f"{{{common}}}".encode(), b"".join(backend_sets),
                          tuple(map(len, backend_sets)))


_backend_names = itemgetter("backend")


class LabelCache:
    """The service and backend label tables of a snapshot's services.  A
    service's labels are rendered again only when its name, key or
    backends change, the tables joined again only when a service does:
    rendering every label at every scrape would cost about as much as the
    rest of a rendering.  backends=False: the backend table stays empty."""

    def __init__(self, backends: bool = True):
        self._backends = backends
        self._services: Dict[tuple, _ServiceLabels] = {}
        self._identities: Optional[List[tuple]] = None
        self._tables: Optional[Tuple[LabelTable, LabelTable]] = None

    def tables(self, services: List[dict]) -> Tuple[LabelTable, LabelTable]:
        """(service table, backend table): rows in the order of services,
        then of their backends."""
        identities = [(svc["service"], svc["key"],
                       tuple(map(_backend_names, svc["backends"])) if self._backends else ())
                      for svc in services]
        if identities == self._identities:
            return self._tables
        known = self._services
        self._services = {identity: known.get(identity) or _service_labels(identity)
                          for identity in identities}
        labels = [self._services[identity] for identity in identities]
        service_table = LabelTable.of([s.service for s in labels],
                                      (len(s.service) for s in labels))
        backend_table = LabelTable.of(
            [s.backends for s in labels],
            itertools.chain.from_iterable(s.backend_lengths for s in labels))
        self._identities, self._tables = identities, (service_table, backend_table)
        return self._tables


# Rows whose values are gathered at a time: numpy's fromiter over a C
# iterator holds the GIL throughout, so in slices, not 100,000 at once.
_GATHER_ROWS = 16384
# Services of a snapshot freed at a time, once rendered.
_FREE_SERVICES = 1024


def _values(rows: List[dict], family: RowFamily) -> np.ndarray:
    import numpy as np
    getter = itemgetter(family.field)
    values = np.empty(len(rows), dtype=np.int64)
    for start in range(0, len(rows), _GATHER_ROWS):
        part = rows[start:start + _GATHER_ROWS]
        values[start:start + len(part)] = np.fromiter(map(getter, part), np.int64, len(part))
        time.sleep(0)                   # a thread waiting for the GIL gets it now
    if family.at_least_zero:
        np.maximum(values, 0, out=values)
    return values


def _process_families(snapshot: dict) -> Tuple[bytes, bytes]:
    """The families before and after the services' (as always ordered)."""
    f = _Families()
    f.add("rplb_uptime_seconds", "gauge", "Seconds since the fast path started",
          f"{float(snapshot.get('uptime_s', 0.0)):.3f}")
    for port, counters in zip(snapshot["ports"], snapshot["port"]):
        for key, value in counters.items():
            f.add(f"rplb_port_{key}_total", "counter", _PORT_HELP.get(key, key), int(value),
                  port=port["port_id"], role=port["role"])
    for reason, value in snapshot["drops"].items():
        f.add("rplb_drops_total", "counter", "Packets dropped by the fast path, by reason",
              int(value), reason=reason)
    for event, value in snapshot["events"].items():
        f.add("rplb_events_total", "counter", "Fast-path events (packets and flows)",
              int(value), event=event)
    after = _Families()
    if "mbufs" in snapshot:
        after.add("rplb_mbufs_in_use", "gauge", "Mbufs taken from the packet pool",
                  int(snapshot["mbufs"]["in_use"]))
        after.add("rplb_mbufs_size", "gauge", "Mbufs in the packet pool",
                  int(snapshot["mbufs"]["size"]))
    return f.text(), after.text()


def render_text(snapshot: dict, labels: Optional[LabelCache] = None,
                backends: bool = True) -> memoryview:
    """The exposition text of one snapshot (without rplb_metrics_age_seconds,
    which depends on when it is served), encoded; with backends=False
    without the per-backend families.  labels: a LabelCache kept between
    snapshots of one configuration's services (a new one otherwise)."""
    import numpy as np
    from rplb import dataplane
    services = snapshot.get("services", [])
    service_table, backend_table = (labels or LabelCache(backends)).tables(services)
    tables = [(service_table, SERVICE_FAMILIES, services)]
    if backends:
        rows = [b for svc in services for b in svc["backends"]]
        tables.append((backend_table, BACKEND_FAMILIES, rows))
    head, tail = _process_families(snapshot)
    parts: List[tuple] = []                 # (header, name, table, values)
    size = len(head) + len(tail)
    for table, families, rows in tables:
        if not table.rows:
            continue
        for family in families:
            header = _family_header(family.name, family.kind, family.help_text).encode()
            name = family.name.encode()
            parts.append((header, name, table, _values(rows, family)))
            size += len(header) + dataplane.metrics_family_bound(len(name), table.offsets)
    out = np.empty(size, dtype=np.uint8)
    at = _put(out, 0, head)
    for header, name, table, values in parts:
        at = _put(out, at, header)
        at = dataplane.write_metrics_family(out, at, name, table.text, table.offsets, values)
    at = _put(out, at, tail)
    return memoryview(out)[:at]


def _put(out: np.ndarray, at: int, data: bytes) -> int:
    out[at:at + len(data)] = memoryview(data)
    return at + len(data)


def render(snapshot: dict) -> str:
    """The exposition text of one snapshot, rendered afresh."""
    return bytes(render_text(snapshot)).decode()


def age_text(age_s: float) -> bytes:
    name, kind, help_text = AGE_FAMILY
    return f"{_family_header(name, kind, help_text)}{name} {max(age_s, 0.0):.3f}\n".encode()


# ---- gzip ----------------------------------------------------------------------

# A gzip member's header: deflate, no name, no time, unknown OS (RFC 1952).
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
# zlib's fastest level: on this text much faster than the default, for a
# few more bytes (docs/performance.md).
_GZIP_LEVEL = 1


def deflate_open(text) -> Tuple[bytes, int]:
    """text as raw deflate data that does not end the stream (a sync flush:
    more blocks may follow), and text's CRC-32.  zlib releases the GIL for
    both."""
    compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH), zlib.crc32(text)


def gzip_member(deflated: bytes, crc: int, length: int, tail: bytes) -> List[bytes]:
    """One gzip member of (text, tail), from deflate_open(text), its length,
    and tail compressed now: a stream compressed apart ends the member (its
    back-references stay within itself, so it may follow other blocks)."""
    compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    last = compressor.compress(tail) + compressor.flush()
    trailer = struct.pack("<II", zlib.crc32(tail, crc), (length + len(tail)) & 0xFFFFFFFF)
    return [_GZIP_HEADER, deflated, last, trailer]


def accepts_gzip(header: Optional[str]) -> bool:
    """Whether an Accept-Encoding header accepts gzip (RFC 9110 12.5.3: by
    name, else through "*"; a quality of 0 refuses)."""
    qualities = {}
    for item in (header or "").split(","):
        coding, _, params = item.partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        qualities[coding.strip().lower()] = quality
    for coding in ("gzip", "x-gzip", "*"):
        if coding in qualities:
            return qualities[coding] > 0
    return False


# ---- renderings and when to make them -------------------------------------------

@dataclass(frozen=True)
class Rendering:
    text: memoryview
    read_at: float                  # time.monotonic() before the counters were read
    took_s: float
    large: bool                     # more than CACHE_ABOVE_BACKENDS backends
    deflated: Optional[bytes] = None    # deflate_open(text): if large, or asked for gzip
    crc: int = 0


@dataclass
class Scraper:
    """What is known of one scraper (by address): when it is expected next."""
    last: float                     # time.monotonic() of its last scrape
    interval: Optional[float] = None
    max_age_s: float = MAX_AGE_S

    def expected(self) -> Optional[float]:
        return None if self.interval is None else self.last + self.interval


# Ahead of an expected scrape, a rendering starts twice the latest's time
# before, and this much more.
AHEAD_S = 0.1
# A rendering serves the scrapes expected up to this long after the one it
# was made for (two scrapers close together share one).
SHARED_S = 0.5
# The most of the time spent rendering ahead of scrapes (unless a scrape
# would otherwise find only a rendering older than its max_age): the
# control plane shares its core, and the GIL, with the renderings.
MAX_BUSY = 0.25


def plan_rendering(now: float, latest: Optional[Rendering],
                   scrapers: Sequence[Scraper]) -> Optional[float]:
    """When the next rendering ahead of a scrape should start (None: no
    scrape is expected that the latest rendering does not serve).

    A scraper is expected every interval after its last scrape.  A
    rendering started `ahead` (twice the latest's time, and AHEAD_S) before
    one of those scrapes is ready for it; the first scrape the latest is
    not fresh for gets one, unless MAX_BUSY forbids it so soon after the
    latest and the latest stays within the scraper's max_age until then:
    then a later scrape gets it.  Scrapers that missed an expected scrape
    by an interval, or whose max_age is shorter than a rendering takes,
    get none ahead (they render at their scrape)."""
    if latest is None or not latest.large:
        return None
    ahead = 2 * latest.took_s + AHEAD_S
    affordable = latest.read_at + latest.took_s / MAX_BUSY
    start = None
    for scraper in scrapers:
        expected, interval = scraper.expected(), scraper.interval
        if expected is None or interval < 0.001 or now > expected + interval \
                or scraper.max_age_s <= ahead + SHARED_S:
            continue
        # Its scrapes to come are expected + k * interval, k = 0, 1, ...:
        # the first the latest is not fresh for,
        not_fresh = math.floor((latest.read_at + ahead + SHARED_S - expected) / interval) + 1
        # the first MAX_BUSY allows a rendering for,
        allowed = math.ceil((affordable + ahead - expected) / interval)
        # and the first the latest is too old for.
        too_old = math.floor((latest.read_at + scraper.max_age_s - SHARED_S - expected)
                             / interval) + 1
        k = max(not_fresh, min(allowed, too_old), 0)
        candidate = expected + k * interval - ahead
        start = candidate if start is None else min(start, candidate)
    return start


class RendererClosed(Exception):
    pass


class Renderer:
    """Renderings of one variant of the exposition, and when to make them.

    A scrape of a small configuration renders afresh.  A large one's is
    answered from the latest rendering while that is at most max_age old;
    otherwise the scrape renders (or waits for the rendering under way).
    A background thread renders ahead of the scrapes it expects
    (plan_rendering): Prometheus scrapes at a fixed interval, so its
    scrapes find a rendering younger than max_age, made at most once per
    scrape.
    """

    # Scraper addresses remembered at most (the oldest forgotten first).
    MAX_SCRAPERS = 64

    def __init__(self, snapshot: Callable[[], dict], backends: bool,
                 log: Callable[[str], None]):
        self._snapshot = snapshot
        self._backends = backends
        self._log = log
        self._labels = LabelCache(backends)
        self._render_lock = threading.Lock()     # one rendering at a time
        self._state = threading.Condition()      # what follows
        self._latest: Optional[Rendering] = None
        self._scrapers: Dict[str, Scraper] = {}
        self._thread: Optional[threading.Thread] = None
        self._closed = False

    @property
    def latest(self) -> Optional[Rendering]:
        return self._latest

    def for_scrape(self, client: str, max_age_s: float = MAX_AGE_S,
                   gzip: bool = False) -> Rendering:
        """The rendering a scrape from client gets.  RendererClosed after
        close(); whatever snapshot() raises."""
        asked = time.monotonic()
        latest = self._latest
        if latest is None or not latest.large or asked - latest.read_at > max_age_s:
            latest = self._fresh(asked - max_age_s, gzip)
        self._expect(client, asked, max_age_s, latest)
        return latest

    def _fresh(self, oldest: float, gzip: bool) -> Rendering:
        """A rendering read after `oldest`: for a large configuration, the
        one under way if it is; for a small one, a new one."""
        with self._render_lock:
            latest = self._latest
            if latest is not None and latest.large and latest.read_at >= oldest:
                return latest
            return self._render(gzip)

    def _render(self, gzip: bool) -> Rendering:
        """(With _render_lock.)"""
        if self._closed:
            raise RendererClosed()
        read_at = time.monotonic()
        # A snapshot of 100,000 backends is as many dicts: with the cyclic
        # collector on, each made full collections of 40-80 ms holding the
        # GIL, in which status and edits waited.  None of it forms cycles.
        with quiet_gc(large=False):
            snapshot = self._snapshot()
            text = render_text(snapshot, self._labels, self._backends)
            services = snapshot.pop("services", [])
            large = sum(len(svc["backends"]) for svc in services) > CACHE_ABOVE_BACKENDS
            # Freed at once, 100,000 dicts hold the GIL some 8 ms.
            while services:
                del services[-_FREE_SERVICES:]
                time.sleep(0)
        # A large one is compressed whoever asked: Prometheus will want it.
        deflated, crc = deflate_open(text) if gzip or large else (None, 0)
        rendering = Rendering(text, read_at, time.monotonic() - read_at, large, deflated, crc)
        with self._state:
            self._latest = rendering
        return rendering

    def _expect(self, client: str, at: float, max_age_s: float, latest: Rendering) -> None:
        with self._state:
            scraper = self._scrapers.pop(client, None)
            if scraper is None:
                scraper = Scraper(at)
            else:
                scraper.interval, scraper.last = at - scraper.last, at
            scraper.max_age_s = max_age_s
            self._scrapers[client] = scraper            # the most recent last
            while len(self._scrapers) > self.MAX_SCRAPERS:
                del self._scrapers[next(iter(self._scrapers))]
            if latest.large and self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._ahead, daemon=True,
                                                name="rplb-prometheus-render")
                self._thread.start()
            self._state.notify()

    def _ahead(self) -> None:
        while True:
            with self._state:
                while True:
                    if self._closed:
                        return
                    now = time.monotonic()
                    start = plan_rendering(now, self._latest, list(self._scrapers.values()))
                    if start is not None and start <= now:
                        break
                    self._state.wait(None if start is None else start - now)
            try:
                with self._render_lock:
                    self._render(gzip=True)
            except RendererClosed:
                return
            except Exception as err:
                self._log(f"prometheus: rendering ahead of a scrape: "
                          f"{type(err).__name__}: {err}")
                with self._state:       # nothing more ahead until they scrape again
                    for scraper in self._scrapers.values():
                        scraper.interval = None

    def close(self) -> None:
        """No snapshot is taken once this returns (one under way is waited
        for); idempotent."""
        with self._state:
            self._closed = True
            self._state.notify_all()
            thread = self._thread
        with self._render_lock:
            pass
        if thread is not None:
            thread.join()


# ---- the HTTP server -------------------------------------------------------------

class BadRequest(ValueError):
    pass


_YES = {"1": True, "yes": True, "true": True, "on": True,
        "0": False, "no": False, "false": False, "off": False}


@dataclass(frozen=True)
class ScrapeOptions:
    max_age_s: float = MAX_AGE_S
    backends: bool = True

    @classmethod
    def of_query(cls, query: str) -> "ScrapeOptions":
        """?max_age=S (seconds, 0: read the counters now) and ?backends=0|1
        (the per-backend families, default 1).  BadRequest names what is
        wrong."""
        try:
            params = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError:
            raise BadRequest(f"cannot parse the query {query!r}") from None
        unknown = sorted(set(params) - {"max_age", "backends"})
        if unknown:
            raise BadRequest(f"unknown parameter {unknown[0]!r} "
                             f"(known: max_age=SECONDS, backends=0|1)")
        options = {}
        for name, values in params.items():
            if len(values) > 1:
                raise BadRequest(f"{name} is given {len(values)} times")
            value = values[0].strip().lower()
            if name == "max_age":
                try:
                    options["max_age_s"] = float(value)
                except ValueError:
                    options["max_age_s"] = -1.0
                if not 0 <= options["max_age_s"] <= 3600:
                    raise BadRequest(f"max_age={values[0]!r}: seconds from 0 to 3600")
            elif value in _YES:
                options["backends"] = _YES[value]
            else:
                raise BadRequest(f"backends={values[0]!r}: 1 or 0 (yes/no, true/false, on/off)")
        return cls(**options)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class PrometheusServer:
    """start() binds and serves on a daemon thread (OSError if it cannot
    bind); close() stops serving and rendering (idempotent)."""

    def __init__(self, address: Tuple[str, int], snapshot: Callable[[], dict],
                 log: Callable[[str], None]):
        self.address = address
        self._snapshot = snapshot
        self._log = log
        self._renderers: Dict[bool, Renderer] = {}
        self._renderers_lock = threading.Lock()
        self._closed = False
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2] if self._server else self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    def renderer(self, backends: bool) -> Renderer:
        """The Renderer of one variant (RendererClosed after close())."""
        with self._renderers_lock:
            if self._closed:
                raise RendererClosed()
            if backends not in self._renderers:
                self._renderers[backends] = Renderer(self._snapshot, backends, self._log)
            return self._renderers[backends]

    def start(self) -> None:
        log, renderer = self._log, self.renderer

        class Handler(BaseHTTPRequestHandler):
            server_version = "rplb"

            def do_GET(self):
                path, _, query = self.path.partition("?")
                if path != "/metrics":
                    self.send_error(404, "only /metrics here")
                    return
                try:
                    options = ScrapeOptions.of_query(query)
                except BadRequest as err:
                    self.send_error(400, str(err))
                    return
                gzip = accepts_gzip(self.headers.get("Accept-Encoding"))
                try:
                    rendering = renderer(options.backends).for_scrape(
                        self.client_address[0], options.max_age_s, gzip)
                except RendererClosed:
                    self.send_error(503, "rplb is stopping")
                    return
                except Exception as err:
                    log(f"prometheus: {type(err).__name__}: {err}")
                    self.send_error(500, "cannot read the counters")
                    return
                age_s = time.monotonic() - rendering.read_at
                tail = age_text(age_s)
                if gzip and rendering.deflated is not None:
                    parts = gzip_member(rendering.deflated, rendering.crc,
                                        len(rendering.text), tail)
                else:
                    parts = [rendering.text, tail]
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                if gzip and rendering.deflated is not None:
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Vary", "Accept-Encoding")
                self.send_header("X-Rplb-Metrics-Age", f"{age_s:.3f}")
                self.send_header("Content-Length", str(sum(len(p) for p in parts)))
                self.end_headers()
                for part in parts:
                    self.wfile.write(part)

            def log_message(self, format, *args):      # no line per scrape
                pass

        server_class = _Server6 if ":" in self.address[0] else _Server
        self._server = server_class(self.address, Handler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name="rplb-prometheus", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """After it, no snapshot is taken (a scrape under way gets 503)."""
        with self._renderers_lock:
            self._closed = True
            renderers = list(self._renderers.values())
        for renderer in renderers:
            renderer.close()
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server, self._thread = None, None
