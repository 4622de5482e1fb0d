"""The Prometheus endpoint's parts, without DPDK's EAL: the C writer of
sample lines, the rendering (checked against the snapshot it renders and
against a strict parser of the format), gzip, the scrape's options, the
renderings made ahead of scrapes, and the HTTP server.  The live endpoint
is tested in test_observability.py.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exposition import ExpositionError, metric, parse
from rplb import dataplane, prometheus
from rplb.prometheus import (CACHE_ABOVE_BACKENDS, LabelCache, PrometheusServer, Renderer,
                             RendererClosed, Rendering, ScrapeOptions, Scraper, accepts_gzip,
                             age_text, deflate_open, gzip_member, plan_rendering, render,
                             render_text)

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def test_importing_the_module_starts_no_thread():
    """rplb-dpdk imports rplb.prometheus to parse --prometheus, before it
    blocks its signals: a thread started then (numpy's OpenBLAS pool) took
    the SIGINT of a stop, which became a KeyboardInterrupt mid-snapshot."""
    probe = ("import sys, threading, rplb.prometheus; "
             "print(threading.active_count(), 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["1", "False"]


# ---- the C writer ------------------------------------------------------------------

def table(*label_sets: bytes):
    offsets = np.zeros(len(label_sets) + 1, dtype=np.uint64)
    np.cumsum([len(s) for s in label_sets], out=offsets[1:])
    return b"".join(label_sets), offsets


def test_writer_writes_each_row_and_nothing_past_its_end():
    labels, offsets = table(b'{a="1"}', b"", b'{a="x\\"y"}', b'{a="4"}')
    values = np.array([0, INT64_MIN, INT64_MAX, -7], dtype=np.int64)
    bound = dataplane.metrics_family_bound(len(b"m_total"), offsets)
    out = np.full(bound + 16, 0xEE, dtype=np.uint8)
    end = dataplane.write_metrics_family(out, 3, b"m_total", labels, offsets, values)
    assert bytes(out[3:end]) == (b'm_total{a="1"} 0\n'
                                 b"m_total -9223372036854775808\n"
                                 b'm_total{a="x\\"y"} 9223372036854775807\n'
                                 b'm_total{a="4"} -7\n')
    assert (out[:3] == 0xEE).all() and (out[end:] == 0xEE).all()
    assert end - 3 <= bound


def test_writer_fits_the_bound_exactly():
    """The bound is reached when every value is at its longest."""
    labels, offsets = table(b'{b="1"}', b'{b="22"}')
    values = np.array([INT64_MIN, INT64_MIN], dtype=np.int64)
    bound = dataplane.metrics_family_bound(1, offsets)
    out = np.zeros(bound, dtype=np.uint8)
    assert dataplane.write_metrics_family(out, 0, b"m", labels, offsets, values) == bound


def test_writer_with_no_rows_writes_nothing():
    out = np.zeros(4, dtype=np.uint8)
    assert dataplane.write_metrics_family(out, 2, b"m", b"", np.zeros(1, np.uint64),
                                          np.zeros(0, np.int64)) == 2


@pytest.mark.parametrize("case", ["decreasing", "past the labels", "count", "room", "at",
                                  "no name"])
def test_writer_refuses_bad_input_without_writing(case):
    labels, offsets = table(b'{a="1"}', b'{a="2"}')
    values = np.array([1, 2], dtype=np.int64)
    name, at = b"m", 0
    out = np.full(dataplane.metrics_family_bound(1, offsets), 0xEE, dtype=np.uint8)
    if case == "decreasing":
        offsets = np.array([0, 9, 7], dtype=np.uint64)
    elif case == "past the labels":
        offsets = np.array([0, 7, 15], dtype=np.uint64)
    elif case == "count":
        offsets = offsets[:2]
    elif case == "room":
        out = out[:-1]
    elif case == "at":
        at = len(out) + 1
    else:
        name = b""
    with pytest.raises(ValueError):
        dataplane.write_metrics_family(out, at, name, labels, offsets, values)
    assert (out == 0xEE).all()


# ---- rendering ---------------------------------------------------------------------

def backend_dict(label, seed):
    return {"backend": label, "weight": seed % 3, "packets": seed * 11,
            "bytes": seed * 1500, "new_flows": seed, "active_flows": seed % 5 - 2,
            "up": seed % 2}


def snapshot_of(services, counter=0):
    """A snapshot shaped as Appliance.snapshot()'s."""
    return {"uptime_s": 12.3456, "engine": "lb",
            "ports": [{"role": "frontend", "port_id": 0}, {"role": "backend", "port_id": 1}],
            "port": [{"rx_packets": 5 + counter, "tx_dropped": 0}, {"rx_packets": 1}],
            "drops": {"malformed": 1, "no_service": counter},
            "events": {"to_backend": 8},
            "mbufs": {"size": 16383, "in_use": 3},
            "services": services}


def service_dict(name, key, backends, seed=0):
    return {"service": name, "key": key, "packets": seed * 3, "bytes": seed * 7,
            "new_flows": seed, "active_flows": seed - 1,
            "backends": [backend_dict(label, seed + i) for i, label in enumerate(backends)]}


def expected_samples(snap, backends=True):
    """What a rendering of snap must say, from the snapshot alone."""
    want = {("rplb_uptime_seconds", frozenset()): round(snap["uptime_s"], 3)}
    for port, counters in zip(snap["ports"], snap["port"]):
        for key, value in counters.items():
            want[(f"rplb_port_{key}_total", frozenset(
                {("port", str(port["port_id"])), ("role", port["role"])}))] = value
    for group, label in (("drops", "reason"), ("events", "event")):
        for key, value in snap[group].items():
            want[(f"rplb_{group}_total", frozenset({(label, key)}))] = value
    for svc in snap["services"]:
        labels = {("service", svc["service"]), ("key", svc["key"])}
        for key in ("packets", "bytes", "new_flows"):
            want[(f"rplb_service_{key}_total", frozenset(labels))] = svc[key]
        want[("rplb_service_active_flows", frozenset(labels))] = max(svc["active_flows"], 0)
        for b in svc["backends"] if backends else ():
            blabels = frozenset(labels | {("backend", b["backend"])})
            for key in ("packets", "bytes", "new_flows"):
                want[(f"rplb_backend_{key}_total", blabels)] = b[key]
            want[("rplb_backend_active_flows", blabels)] = max(b["active_flows"], 0)
            want[("rplb_backend_weight", blabels)] = b["weight"]
            want[("rplb_backend_up", blabels)] = b["up"]
    want[("rplb_mbufs_in_use", frozenset())] = snap["mbufs"]["in_use"]
    want[("rplb_mbufs_size", frozenset())] = snap["mbufs"]["size"]
    return want


# Label values as operators may write them: quotes, backslashes, newlines,
# any Unicode (no lone surrogates: not text), bracketed IPv6 backends.
label_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
backend_label = st.one_of(
    st.builds(lambda a, p: f"172.16.{a // 256}.{a % 256}:{p}", st.integers(0, 65535),
              st.integers(1, 65535)),
    st.builds(lambda a, p: f"[fd00::{a:x}]:{p}", st.integers(0, 65535), st.integers(1, 65535)),
    label_text)


@st.composite
def snapshots(draw):
    keys = draw(st.lists(label_text, max_size=5, unique=True))
    services = [service_dict(draw(label_text), key,
                             draw(st.lists(backend_label, max_size=4, unique=True)),
                             seed=draw(st.integers(0, 1 << 40)))
                for key in keys]
    return snapshot_of(services, counter=draw(st.integers(0, 1 << 62)))


@settings(max_examples=150, deadline=None)
@given(snapshots(), st.booleans())
def test_rendering_says_what_the_snapshot_says(snap, backends):
    text = bytes(render_text(snap, backends=backends)).decode()
    assert parse(text) == expected_samples(snap, backends)


def test_render_escapes_labels_and_keeps_the_families_in_order():
    snap = snapshot_of([service_dict('we"b\\\n', "10.0.0.1:tcp:80", ["[fd00::1]:80"], 2)])
    text = render(snap)
    assert 'rplb_service_packets_total{service="we\\"b\\\\\\n",key="10.0.0.1:tcp:80"} 6\n' \
        in text
    assert ('rplb_backend_weight{service="we\\"b\\\\\\n",key="10.0.0.1:tcp:80",'
            'backend="[fd00::1]:80"} 2\n') in text
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert names[0] == "rplb_uptime_seconds" and names[-2:] == ["rplb_mbufs_in_use",
                                                               "rplb_mbufs_size"]
    assert names.index("rplb_service_packets_total") < names.index("rplb_backend_packets_total")


def test_a_family_without_rows_is_left_out():
    text = render(snapshot_of([service_dict("web", "k", [])]))
    assert "rplb_service_packets_total" in text and "rplb_backend" not in text
    assert "rplb_service" not in render(snapshot_of([]))


def test_strict_parser_refuses_what_prometheus_refuses():
    good = "# HELP a_total x\n# TYPE a_total counter\na_total{l=\"v\"} 1\n"
    assert metric(parse(good), "a_total", l="v") == 1
    for bad in ["a_total 1\n",                                     # no TYPE
                good + 'a_total{l="v"} 2\n',                       # the same series twice
                good + "# TYPE b gauge\nb 1\na_total{l=\"w\"} 1\n",  # not one group
                good.replace('"v"', '"v\\x"'),                     # a bad escape
                good.replace("} 1", "} one"),                      # a bad value
                good.replace("{l=", "{1l="),                       # a bad label name
                good + "\n",                                       # a blank line
                good[:-1]]:                                        # no final newline
        with pytest.raises(ExpositionError):
            parse(bad)


def test_prometheus_client_reads_a_rendering():
    """Prometheus's own Python parser agrees with the strict one."""
    from prometheus_client import parser
    snap = snapshot_of([service_dict('we"b\\\n', "10.0.0.1:tcp:80", ["[fd00::1]:80", "b"], 3),
                        service_dict("dns", "10.0.0.2:udp:53", ["10.1.0.1:53"], 4)])
    text = render(snap) + age_text(0.25).decode()
    theirs = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            theirs[(sample.name, frozenset(sample.labels.items()))] = sample.value
    assert theirs == parse(text)


# ---- the label cache ---------------------------------------------------------------

def test_label_cache_renders_a_service_again_only_when_it_changes():
    cache = LabelCache()
    services = [service_dict("web", "k1", ["a:1", "b:2"]), service_dict("dns", "k2", ["c:3"])]
    first = cache.tables(services)
    assert cache.tables([dict(s) for s in services]) is first        # nothing changed
    changed = [service_dict("web", "k1", ["a:1", "b:2", "d:4"]), services[1]]
    service_table, backend_table = cache.tables(changed)
    assert backend_table.rows == 4 and service_table.rows == 2
    text = bytes(render_text(snapshot_of(changed), cache)).decode()
    assert parse(text) == expected_samples(snapshot_of(changed))
    renamed = [service_dict("www", "k1", ["a:1"]), services[1]]
    assert 'service="www"' in bytes(render_text(snapshot_of(renamed), cache)).decode()


# ---- gzip --------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 70000])
def test_gzip_member_is_the_text_and_the_tail(size):
    text = bytes(np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)) + b"\n"
    deflated, crc = deflate_open(memoryview(text))
    tail = age_text(1.5)
    member = b"".join(gzip_member(deflated, crc, len(text), tail))
    assert gzip.decompress(member) == text + tail        # checks CRC-32 and length
    stream = zlib.decompressobj(wbits=31)
    assert stream.decompress(member) == text + tail and stream.eof and not stream.unused_data


@pytest.mark.parametrize("header,accepted", [
    (None, False), ("", False), ("gzip", True), ("GZip", True), ("x-gzip", True),
    ("*", True), ("identity", False), ("deflate, gzip;q=1.0, *;q=0.5", True),
    ("gzip;q=0", False), ("br, gzip;q=0.0", False), ("gzip;q=0.001", True),
    ("*;q=0, gzip", True), ("gzip;q=bad", False), ("identity;q=1, *;q=0", False)])
def test_accept_encoding(header, accepted):
    assert accepts_gzip(header) is accepted


# ---- the scrape's options -----------------------------------------------------------

@pytest.mark.parametrize("query,options", [
    ("", ScrapeOptions()), ("max_age=0", ScrapeOptions(max_age_s=0.0)),
    ("max_age=2.5&backends=0", ScrapeOptions(max_age_s=2.5, backends=False)),
    ("backends=yes", ScrapeOptions(backends=True)), ("backends=Off", ScrapeOptions(backends=False))])
def test_scrape_options(query, options):
    assert ScrapeOptions.of_query(query) == options


@pytest.mark.parametrize("query,says", [
    ("max_age=-1", "max_age"), ("max_age=nan", "max_age"), ("max_age=soon", "max_age"),
    ("max_age=3601", "max_age"), ("backends=maybe", "backends"), ("backend=0", "'backend'"),
    ("max_age=1&max_age=2", "max_age is given 2 times"), ("max_age", "query")])
def test_bad_scrape_options_are_named(query, says):
    with pytest.raises(prometheus.BadRequest) as err:
        ScrapeOptions.of_query(query)
    assert says in str(err.value)


# ---- renderings and when to make them ------------------------------------------------

class Snapshots:
    """A snapshot source whose counters move at every call (so a rendering
    shows which call it came from), counting calls."""

    def __init__(self, backends_per_service, services=1):
        self.calls = 0
        self.closed = False
        self._lock = threading.Lock()
        self._shape = [(f"s{i}", f"10.0.{i // 256}.{i % 256}:tcp:80",
                        [f"172.16.{j // 256}.{j % 256}:80" for j in range(backends_per_service)])
                       for i in range(services)]

    def __call__(self):
        assert not self.closed, "a snapshot after close()"
        with self._lock:
            self.calls += 1
            call = self.calls
        return snapshot_of([service_dict(*shape) for shape in self._shape], counter=call)



def wait_until(what, predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def call_of(rendering: Rendering) -> int:
    return int(metric(parse(bytes(rendering.text).decode()), "rplb_drops_total",
                      reason="no_service"))


def test_small_configurations_render_at_every_scrape():
    source = Snapshots(3)
    renderer = Renderer(source, True, log=print)
    try:
        assert [call_of(renderer.for_scrape("a")) for _ in range(3)] == [1, 2, 3]
        assert not renderer.latest.large
    finally:
        renderer.close()


def test_large_configurations_are_served_within_max_age():
    source = Snapshots(CACHE_ABOVE_BACKENDS + 1)
    renderer = Renderer(source, True, log=print)
    try:
        first = renderer.for_scrape("a", gzip=True)
        assert first.large and first.deflated is not None and source.calls == 1
        assert renderer.for_scrape("b") is first                 # a second scraper, too
        assert source.calls == 1
        fresh = renderer.for_scrape("a", max_age_s=0)
        assert call_of(fresh) == 2 and fresh.read_at > first.read_at
        backends = parse(bytes(fresh.text).decode())
        assert sum(name == "rplb_backend_packets_total" for name, _ in backends) \
            == CACHE_ABOVE_BACKENDS + 1
    finally:
        renderer.close()


def test_a_regular_scraper_finds_a_rendering_made_ahead():
    """Two scrapes a second apart: the background renders before the third
    (without a scrape asking), and the third gets that rendering."""
    source = Snapshots(CACHE_ABOVE_BACKENDS + 1)
    renderer = Renderer(source, True, log=print)
    try:
        renderer.for_scrape("prometheus")
        time.sleep(1.0)             # the scraper's pace (what is tested is the reaction)
        second = time.monotonic()
        renderer.for_scrape("prometheus")
        wait_until("a rendering made ahead, by nobody's scrape",
                   lambda: renderer.latest.read_at > second)
        third = renderer.for_scrape("prometheus")
        assert source.calls == 2 and third.read_at > second
    finally:
        renderer.close()
    assert renderer.latest is third


def test_no_snapshot_after_close():
    source = Snapshots(CACHE_ABOVE_BACKENDS + 1)
    renderer = Renderer(source, True, log=print)
    renderer.for_scrape("a")
    renderer.for_scrape("a")         # a scraper expected: the background thread runs
    renderer.close()
    source.closed = True
    with pytest.raises(RendererClosed):
        renderer.for_scrape("a", max_age_s=0)
    renderer.close()                 # idempotent


def rendering(read_at, took_s):
    return Rendering(memoryview(b""), read_at, took_s, large=True)


@pytest.mark.parametrize("now,latest,scraper,start", [
    # Prometheus every 15 s: ready 2 renderings' time and 0.1 s before it comes.
    (0.5, rendering(-1.1, 0.5), Scraper(last=0, interval=15), 15 - 1.1),
    # Every 1.05 s, renderings of 0.7 s: a rendering at most every 2.8 s
    # (MAX_BUSY), for the fourth scrape to come (the latest serves three,
    # at most 3.3 s old).
    (0.5, rendering(0, 0.7), Scraper(last=0.15, interval=1.05), 0.15 + 4 * 1.05 - 1.5),
    # Renderings of 1.5 s: the busy limit would leave the fourth scrape a
    # rendering 5.4 s old, over max_age: its rendering starts sooner.
    (0.5, rendering(0, 1.5), Scraper(last=0.15, interval=1.05), 0.15 + 5 * 1.05 - 3.1),
    # The latest is fresh for the next scrape: the one after gets the next.
    (10.0, rendering(9.85, 0.1), Scraper(last=0.15, interval=10), 0.15 + 20 - 0.3),
])
def test_plan_rendering(now, latest, scraper, start):
    assert plan_rendering(now, latest, [scraper]) == pytest.approx(start)


def test_plan_rendering_renders_for_no_one_it_cannot_help():
    latest = rendering(0, 0.5)
    assert plan_rendering(1, latest, []) is None
    assert plan_rendering(1, latest, [Scraper(last=0)]) is None           # one scrape
    assert plan_rendering(40, latest, [Scraper(last=0, interval=15)]) is None    # gone
    assert plan_rendering(1, latest, [Scraper(last=0, interval=15, max_age_s=1)]) is None
    small = Rendering(memoryview(b""), 0, 0.5, large=False)
    assert plan_rendering(1, small, [Scraper(last=0, interval=15)]) is None
    both = [Scraper(last=3, interval=15), Scraper(last=0, interval=15)]
    assert plan_rendering(1, latest, both) == pytest.approx(13.9)        # the sooner


# ---- the HTTP server --------------------------------------------------------------

@pytest.fixture
def server():
    source = Snapshots(CACHE_ABOVE_BACKENDS + 1, services=2)
    endpoint = PrometheusServer(("127.0.0.1", 0), source, log=print)
    endpoint.start()
    endpoint.source = source
    yield endpoint
    endpoint.close()


def get(url, encoding=None):
    headers = {"Accept-Encoding": encoding} if encoding else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                timeout=30) as reply:
        return reply.headers, reply.read()


def test_gzip_scrape_is_the_whole_exposition(server):
    headers, body = get(server.url, "gzip")
    assert headers["Content-Encoding"] == "gzip" and headers["Vary"] == "Accept-Encoding"
    assert headers["Content-Type"] == prometheus.CONTENT_TYPE
    text = gzip.decompress(body).decode()
    samples = parse(text)
    snap = Snapshots(CACHE_ABOVE_BACKENDS + 1, services=2)()
    want = expected_samples(snap)
    age = samples.pop(("rplb_metrics_age_seconds", frozenset()))
    assert samples == want
    assert 0 <= age <= float(headers["X-Rplb-Metrics-Age"]) + 0.001
    assert text.endswith(f"rplb_metrics_age_seconds {age:.3f}\n")


def test_plain_scrape_and_options(server):
    headers, body = get(server.url + "?backends=0&max_age=0")
    assert headers["Content-Encoding"] is None
    samples = parse(body.decode())
    assert not any(name.startswith("rplb_backend_") for name, _ in samples)
    assert metric(samples, "rplb_service_packets_total", service="s1",
                  key="10.0.0.1:tcp:80") == 0
    # The per-backend variant has a rendering of its own, then served to
    # plain and gzip scrapers alike until max_age.
    plain = [get(server.url)[1] for _ in range(2)]
    calls = server.source.calls
    compressed = gzip.decompress(get(server.url, "gzip")[1])
    assert server.source.calls == calls
    counters = {text.split(b"# HELP rplb_metrics_age")[0] for text in (*plain, compressed)}
    assert len(counters) == 1


@pytest.mark.parametrize("path,status,says", [
    ("/other", 404, "only /metrics"), ("/metrics?max_age=-1", 400, "max_age"),
    ("/metrics?scope=all", 400, "unknown parameter 'scope'")])
def test_bad_requests_are_answered_with_why(server, path, status, says):
    with pytest.raises(urllib.error.HTTPError) as err:
        get(server.url.replace("/metrics", path))
    assert err.value.code == status and says in err.value.read().decode()


def test_closed_server_takes_no_snapshot(server):
    get(server.url)
    server.close()
    server.source.closed = True
    with pytest.raises(OSError):
        get(server.url)
    server.close()
