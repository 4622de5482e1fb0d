"""A Prometheus endpoint: GET /metrics in the text exposition format 0.0.4,
rendered from Appliance.snapshot() at each scrape (rplb-dpdk --prometheus).

Off unless asked: rplb listens on no network address by default.
"""

from __future__ import annotations

import argparse
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, List, Optional, Tuple

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_HOST = "127.0.0.1"


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


class _Families:
    """Metric families in first-seen order, samples grouped under their family."""

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

    def text(self) -> str:
        lines = []
        for name in self._order:
            kind, help_text = self._meta[name]
            lines.append(f"# HELP {name} {_escape_help(help_text)}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(self._samples[name])
        return "\n".join(lines) + "\n"


_PORT_HELP = {"rx_packets": "Packets received by the fast path on the port",
              "rx_bytes": "Bytes received by the fast path on the port",
              "tx_packets": "Packets sent by the fast path on the port",
              "tx_bytes": "Bytes sent by the fast path on the port",
              "tx_dropped": "Packets the port did not accept for sending"}
_FLOW_HELP = {"packets": "Packets (both directions)", "bytes": "Bytes (both directions)",
              "new_flows": "Flows created", "active_flows": "Flows currently tracked"}


def render(snapshot: dict) -> str:
    """The exposition text of one snapshot."""
    return b"".join(render_chunks(snapshot)).decode()


def render_chunks(snapshot: dict) -> List[bytes]:
    """The exposition text of one snapshot, encoded, in pieces of a few
    thousand lines: with 100,000 backends the text is some 60 MB, and
    joined or encoded in one piece it would hold the GIL for tens of ms,
    stalling the control socket's answers meanwhile."""
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
    chunks = [f.text().encode()]
    services = snapshot.get("services", [])
    if services:
        chunks.extend(_services_chunks(services))
    if "mbufs" in snapshot:
        f = _Families()
        f.add("rplb_mbufs_in_use", "gauge", "Mbufs taken from the packet pool",
              int(snapshot["mbufs"]["in_use"]))
        f.add("rplb_mbufs_size", "gauge", "Mbufs in the packet pool",
              int(snapshot["mbufs"]["size"]))
        chunks.append(f.text().encode())
    return chunks


_SERVICE_FAMILIES = (
    ("rplb_service_packets_total", "counter", f"{_FLOW_HELP['packets']} of the service",
     "packets"),
    ("rplb_service_bytes_total", "counter", f"{_FLOW_HELP['bytes']} of the service", "bytes"),
    ("rplb_service_new_flows_total", "counter", f"{_FLOW_HELP['new_flows']} of the service",
     "new_flows"),
    ("rplb_service_active_flows", "gauge", "Flows of the service currently tracked",
     "active_flows"),
)
_BACKEND_FAMILIES = (
    ("rplb_backend_packets_total", "counter", f"{_FLOW_HELP['packets']} of the backend",
     "packets"),
    ("rplb_backend_bytes_total", "counter", f"{_FLOW_HELP['bytes']} of the backend", "bytes"),
    ("rplb_backend_new_flows_total", "counter", f"{_FLOW_HELP['new_flows']} of the backend",
     "new_flows"),
    ("rplb_backend_active_flows", "gauge", "Flows of the backend currently tracked",
     "active_flows"),
    ("rplb_backend_weight", "gauge", "Maglev weight of the backend (0: drained)", "weight"),
)


# Lines joined and encoded at a time (render_chunks).
_CHUNK_LINES = 4096


def _services_chunks(services: list) -> List[bytes]:
    """The per-service and per-backend families.  With tens of thousands of
    backends this is most of a scrape: each sample's labels are escaped
    once, and each family's lines are joined _CHUNK_LINES at a time."""
    service_lines: List[List[str]] = [[] for _ in _SERVICE_FAMILIES]
    backend_lines: List[List[str]] = [[] for _ in _BACKEND_FAMILIES]
    for svc in services:
        labels = f'service="{escape_label(svc["service"])}",key="{escape_label(svc["key"])}"'
        for lines, (name, _, _, field) in zip(service_lines, _SERVICE_FAMILIES):
            value = int(svc[field])
            lines.append(f"{name}{{{labels}}} {max(value, 0) if field == 'active_flows' else value}")
        for b in svc["backends"]:
            backend = f'{labels},backend="{escape_label(b["backend"])}"'
            for lines, (name, _, _, field) in zip(backend_lines, _BACKEND_FAMILIES):
                value = int(b[field])
                lines.append(f"{name}{{{backend}}} "
                             f"{max(value, 0) if field == 'active_flows' else value}")
    out: List[bytes] = []
    for families, all_lines in ((_SERVICE_FAMILIES, service_lines),
                                (_BACKEND_FAMILIES, backend_lines)):
        for (name, kind, help_text, _), lines in zip(families, all_lines):
            if lines:
                out.append(f"# HELP {name} {_escape_help(help_text)}\n"
                           f"# TYPE {name} {kind}\n".encode())
                for start in range(0, len(lines), _CHUNK_LINES):
                    out.append(("\n".join(lines[start:start + _CHUNK_LINES]) + "\n").encode())
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class PrometheusServer:
    """start() binds and serves on a daemon thread (OSError if it cannot
    bind); close() stops serving (idempotent)."""

    def __init__(self, address: Tuple[str, int], snapshot: Callable[[], dict],
                 log: Callable[[str], None]):
        self.address = address
        self._snapshot = snapshot
        self._log = log
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2] if self._server else self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    def start(self) -> None:
        snapshot, log = self._snapshot, self._log

        class Handler(BaseHTTPRequestHandler):
            server_version = "rplb"

            def do_GET(self):
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics here")
                    return
                try:
                    chunks = render_chunks(snapshot())
                except Exception as err:
                    log(f"prometheus: {type(err).__name__}: {err}")
                    self.send_error(500, "cannot read the counters")
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(sum(len(c) for c in chunks)))
                self.end_headers()
                for chunk in chunks:
                    self.wfile.write(chunk)

            def log_message(self, format, *args):      # no line per scrape
                pass

        server_class = _Server6 if ":" in self.address[0] else _Server
        self._server = server_class(self.address, Handler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name="rplb-prometheus", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server, self._thread = None, None
