"""rplb's commands for DPDK telemetry: /rplb/stats and /rplb/services.

DPDK answers telemetry requests on its own thread, in C, which must never
call Python; so a thread of the control plane renders the snapshot every
PERIOD seconds into flat (group, name, value) entries and publishes them
to csrc/telemetry.c, whose handlers answer from the last list published.

    dpdk-telemetry.py -f <file-prefix>      then  /rplb/stats, /rplb/services
"""

from __future__ import annotations

import re
import threading
from typing import Callable, List, Optional, Tuple

PERIOD = 0.5
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_/]")


def max_services() -> int:
    """/rplb/services names at most this many services, the first ones: a
    telemetry dict holds at most this many entries (and a reply 16 KiB of
    JSON in all), so the others are left out rather than rendered every
    period for nothing (rplbctl and Prometheus show them all)."""
    from rplb import contract
    return contract.CONSTANTS["RPLB_TEL_MAX_ENTRIES"]

Entry = Tuple[str, str, object]


def stats_entries(snapshot: dict) -> List[Entry]:
    """/rplb/stats: {"uptime_s", "engine", "frontend": {...}, "backend": {...},
    "drops": {...}, "events": {...}, "mbufs": {...}}."""
    out: List[Entry] = [("", "uptime_s", int(snapshot.get("uptime_s", 0))),
                        ("", "engine", str(snapshot.get("engine")))]
    for port, counters in zip(snapshot["ports"], snapshot["port"]):
        role = port["role"]
        out.append((role, "port_id", int(port["port_id"])))
        out.append((role, "name", str(port["name"])))
        out.extend((role, k, int(v)) for k, v in counters.items())
    for group in ("drops", "events"):
        out.extend((group, k, int(v)) for k, v in snapshot[group].items())
    if "mbufs" in snapshot:
        out.extend(("mbufs", k, int(v)) for k, v in snapshot["mbufs"].items())
    return out


def telemetry_name(text: str) -> str:
    """DPDK telemetry refuses dict keys with other characters than letters,
    digits, '_' and '/' (the entry is silently left out): replace them."""
    return _NOT_ALLOWED.sub("_", text)


def services_entries(snapshot: dict) -> List[Entry]:
    """/rplb/services: one dict per service, named by its label (characters
    telemetry refuses become '_'): "key" (vip:proto:port), its counters,
    and per backend i "backend/<i>/address" (ip:port), ".../weight", its
    counters, ".../up" (1 or 0) and ".../state" ("up", or "down: " and
    why).  The first max_services() services only."""
    out: List[Entry] = []
    for svc in snapshot.get("services", [])[:max_services()]:
        group = telemetry_name(str(svc["service"]))
        out.append((group, "key", str(svc["key"])))
        out.extend((group, k, max(int(svc[k]), 0))
                   for k in ("packets", "bytes", "new_flows", "active_flows"))
        for i, b in enumerate(svc["backends"]):
            out.append((group, f"backend/{i}/address", str(b["backend"])))
            out.extend((group, f"backend/{i}/{k}", max(int(b[k]), 0))
                       for k in ("weight", "packets", "bytes", "new_flows", "active_flows"))
            if "up" in b:
                out.append((group, f"backend/{i}/up", int(b["up"])))
                out.append((group, f"backend/{i}/state", state_text(b)))
    return out


def state_text(backend: dict) -> str:
    """"up", "down: disabled", "down: <the health check's reason>"."""
    if backend["up"]:
        return "up"
    return "down: " + ("disabled" if backend.get("disabled") else backend.get("reason") or "?")


def publish(snapshot: dict) -> None:
    from rplb import dataplane
    dataplane.telemetry_publish(dataplane.TELEMETRY_STATS, stats_entries(snapshot))
    dataplane.telemetry_publish(dataplane.TELEMETRY_SERVICES, services_entries(snapshot))


class TelemetryPublisher:
    """Registers the commands and republishes every PERIOD s: start() once
    the appliance runs, close() before the workers stop (idempotent)."""

    def __init__(self, snapshot: Callable[[Optional[int]], dict], log: Callable[[str], None],
                 period: float = PERIOD):
        self._snapshot = snapshot
        self._log = log
        self._period = period
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        from rplb import dataplane
        dataplane.telemetry_register()
        self._publish()
        self._thread = threading.Thread(target=self._loop, name="rplb-telemetry", daemon=True)
        self._thread.start()

    def _publish(self) -> None:
        try:
            publish(self._snapshot(max_services()))
        except Exception as err:          # never end the thread: try again next period
            self._log(f"telemetry: {type(err).__name__}: {err}")

    def _loop(self) -> None:
        while not self._stop.wait(self._period):
            self._publish()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
