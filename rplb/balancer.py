"""The run-time API of the load balancer, for the CLI and for programs that
embed rplb: apply a whole configuration or edit one service or backend,
each change atomic, and read per-service and per-backend counters.

A change rebuilds only the services it changes (rplb.tables), without
holding the lock readers take: status, counters, telemetry and Prometheus
keep answering while a large reload is being built.  Only publishing the
new tables and committing the bookkeeping hold it.

It also holds each backend's state: up or down by its health check (what
rplb.health reports) and disabled or not by the operator, with the reason
and time of the last change.  Such a change republishes the one service
it concerns (rplb.tables.effective says what it publishes).  The states
are run-time state, not configuration: a reload keeps them for the
backends it keeps (same service, same ip:port), a restart forgets them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import threading
import time
from dataclasses import dataclass, replace
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from rplb import contract
from rplb.config import (Backend, Config, ConfigError, NotFoundError, Service, ServiceKey,
                         edit_lineage, forget_lineage)
from rplb.errors import RplbError
from rplb.gc_control import LARGE_CHANGE, freeze_long_lived, quiet_gc, release_slowly
from rplb.tables import AVAILABLE, Availability, Ident, Placed, Plan, TableState


@dataclass(frozen=True)
class BackendState:
    """A backend's run-time state.  health: "up" or "down" by its check,
    "unknown" until its first check ends (and always, without a check);
    reason: why (the last check's outcome); disabled: by the operator
    (rplbctl backend disable); since: time.time() of the last change of
    up() (0: never changed)."""

    health: str = "unknown"
    reason: str = ""
    disabled: bool = False
    since: float = 0.0

    @property
    def up(self) -> bool:
        """Takes new flows, as far as its own state goes (a service whose
        backends are all down may serve with them all the same: failing
        open)."""
        return not self.disabled and self.health != "down"

    @property
    def state(self) -> str:
        return "up" if self.up else "down"


UNKNOWN = BackendState()


def _changed(state: BackendState, now: float, **changes) -> BackendState:
    """state with changes; since moves to now (time.time()) when up()
    changes, or on the first change."""
    new = replace(state, **changes)
    if new.up != state.up or state.since == 0.0:
        new = replace(new, since=now)
    return new


@dataclass(frozen=True)
class HealthReport:
    """A health check's verdict on one backend of one service: up or down,
    and why."""

    service: ServiceKey
    backend: Ident
    up: bool
    reason: str


def ident(backend: Backend) -> Ident:
    return (int(backend.ip), backend.port)

# Cumulative counters of a backend slot, and of a service's own (the
# replies rewritten without a flow), as the C layout names them.
_SLOT_TOTALS = ("packets", "bytes", "new_flows")
_SERVICE_TOTALS = ("packets", "bytes")


class Balancer:
    """Owns the configuration published to a running LoadBalancer.

    Every change goes through :meth:`apply` (or an edit method): the new
    tables are built and published completely, or (on any error) nothing
    changes, timeouts included, and the error is raised: ConfigError for a
    bad configuration, RplbError for DPDK.
    """

    def __init__(self, lb, config: Optional[Config] = None):
        self._lb = lb
        self._tables = TableState()
        self._change_lock = threading.RLock()   # one change at a time, builds included
        self._state_lock = threading.Lock()     # publish + commit; what readers wait for
        self._view: Tuple[Config, Dict[ServiceKey, Placed]] = (Config(), {})
        self._closed = False
        # The fast path counts whatever belongs to a flow under its
        # backend's slot only; a service's totals add up its slots' (and
        # its own counters, the replies rewritten without a flow).  A slot
        # stays its service's after the backend is removed (replies of its
        # flows may still be counted there) until the slot is reused; then
        # what it counted moves into _retired.  Counters are read relative
        # to a base taken when their slot or service id changed hands.  A
        # slot's active_flows needs no base: the workers zero it when the
        # slot changes hands.
        self._service_base = np.zeros((contract.MAX_SERVICES, len(_SERVICE_TOTALS)), np.int64)
        self._backend_base = np.zeros((contract.MAX_BACKENDS, len(_SLOT_TOTALS)), np.int64)
        self._retired = np.zeros((contract.MAX_SERVICES, len(_SLOT_TOTALS)), np.int64)
        # Per slot: the service id and incarnation of the service whose
        # counts it holds, or -1 (a service removed and added again under
        # the same key is a new incarnation and starts from zero).
        self._slot_service = np.full(contract.MAX_BACKENDS, -1, np.int64)
        self._slot_incarnation = np.full(contract.MAX_BACKENDS, -1, np.int64)
        # Backend states by service and backend; a backend missing here is
        # UNKNOWN.  What the tables were built from: their availability.
        self._states: Dict[ServiceKey, Dict[Ident, BackendState]] = {}
        self._availability: Dict[ServiceKey, Availability] = {}
        # health_checks is fixed by the first configuration (the kernel
        # interface is made from it at start).
        self._applied = False
        self._listeners: List = []
        if config is not None:
            self.apply(config)

    @property
    def config(self) -> Config:
        return self._view[0]

    # ---- changes -------------------------------------------------------------

    def apply(self, config: Config) -> List[str]:
        """Publish config atomically, rebuilding what differs from the
        running configuration: a config made from the running one by
        Config's edits is known to differ only in the services they
        changed; any other is compared service by service.  Returns notes
        for the operator (e.g. settings that only take effect at restart)."""
        with self._change_lock:
            return self._apply(config, edit_lineage(config, self._tables.config))

    def _apply(self, config: Config, keys: Optional[Iterable[ServiceKey]]) -> List[str]:
        if self._closed:
            raise RplbError(9, "the load balancer is closed")
        # A Config built by its constructor was never validated: at least
        # its tables must fit in its budget (ConfigError names the figure).
        if config.tables_memory() > config.tables_memory_mb << 20:
            from rplb.config import _Checker
            _Checker("<running>").memory(config, config._summary())
        running = self._tables.config
        if self._applied and config.health_checks != running.health_checks:
            def shown(settings):
                return "none" if settings is None else ", ".join(
                    f"{k}: {v}" for k, v in settings.to_dict().items())
            raise ConfigError("<running>", "health_checks",
                              "cannot change while rplb runs (its interface and address are "
                              f"made at start): running with {shown(running.health_checks)}, "
                              f"the new configuration has {shown(config.health_checks)}; "
                              "restart rplb-dpdk to change it")
        notes = []
        if config.flow_table_size != self._lb.flow_table_size:
            notes.append(f"flow_table_size {config.flow_table_size} takes effect at the "
                         f"next start (running with {self._lb.flow_table_size})")
        fragments = config.fragments
        if (fragments.datagrams, fragments.held, fragments.timeout) != self._lb.fragment_bounds:
            running = dict(zip(("datagrams", "held", "timeout"), self._lb.fragment_bounds))
            notes.append(f"fragments {dataclasses.asdict(fragments)} take effect at the next "
                         f"start (running with {running})")
        with quiet_gc(large=keys is None or len(keys) > LARGE_CHANGE):
            if keys is None:
                keys = self._tables.changed_keys(config)
            try:
                plan = self._tables.plan(config, keys, self._availability)
            except ValueError as err:
                raise ConfigError("<running>", "services", str(err)) from None
            with self._state_lock:
                services, backends, maglevs = self._tables.arrays()
                try:
                    self._lb.publish(services, backends, maglevs, config.timeouts,
                                     strict=config.strict)
                except BaseException:
                    self._tables.rollback(plan)
                    raise
                self._tables.commit(plan)
                self._account(plan)
                self._forget_states(running, config, keys)
                self._applied = True
                forget_lineage(config)
                old_view, self._view = self._view, (config, plan.placed)
            if plan.changed > LARGE_CHANGE:
                freeze_long_lived()
                old_config, old_placed = old_view
                release_slowly([list(old_config.services), list(old_placed.values()),
                                plan.journal.forget()])
        for listener in self._listeners:
            listener(config)
        return notes

    def add_listener(self, listener) -> None:
        """listener(config) is called after each change is published (with
        the change lock held: it must return at once), e.g. so that the
        health checks follow the services."""
        self._listeners.append(listener)

    def _forget_states(self, old: Config, new: Config, keys: Iterable[ServiceKey]) -> None:
        """After a change of the services keys: the states and availability
        of the services and backends it removed go, those it keeps stay
        (no flap at a reload).  A service that lost its health check keeps
        only what the operator disabled."""
        if not self._states and not self._availability:
            return
        by_key = new._summary().by_key
        for key in keys:
            states = self._states.get(key)
            availability = self._availability.get(key)
            if states is None and availability is None:
                continue
            service = by_key.get(key)
            if service is None:
                self._states.pop(key, None)
                self._availability.pop(key, None)
                continue
            kept = {ident(b) for b in service.backends}
            checked = service.health is not None
            if states is not None:
                # Copied, not changed in place: readers iterate the one they
                # took under the state lock.
                now = time.time()
                states = {backend: state if checked or state.health == "unknown"
                          else _changed(state, now, health="unknown", reason="")
                          for backend, state in states.items() if backend in kept}
                if states:
                    self._states[key] = states
                else:
                    del self._states[key]
            if availability is not None:
                down = availability.down & kept if checked else frozenset()
                disabled = availability.disabled & kept
                if down or disabled:
                    self._availability[key] = Availability(frozenset(down), frozenset(disabled))
                else:
                    del self._availability[key]

    # ---- backend states ------------------------------------------------------

    def report_health(self, reports: Sequence[HealthReport]) -> List[str]:
        """Record health checks' verdicts and republish the services whose
        backends changed state (all in one publish).  Verdicts on a service
        or backend no longer configured, or without a check, are ignored.
        Returns one line per backend whose health changed, for the log.
        Raises RplbError when the tables cannot be published (nothing
        changes then)."""
        with self._change_lock:
            if self._closed:
                return []
            config = self._tables.config
            by_key = config._summary().by_key
            now = time.time()
            changes: Dict[ServiceKey, Dict[Ident, BackendState]] = {}
            members: Dict[ServiceKey, set] = {}
            lines = []
            for report in reports:
                service = by_key.get(report.service)
                if service is None or service.health is None:
                    continue
                known = members.get(report.service)
                if known is None:
                    known = members[report.service] = {ident(b) for b in service.backends}
                if report.backend not in known:
                    continue
                pending = changes.setdefault(report.service, {})
                old = pending.get(report.backend) or \
                    self._states.get(report.service, {}).get(report.backend, UNKNOWN)
                health = "up" if report.up else "down"
                if old.health == health and old.reason == report.reason:
                    continue
                new = _changed(old, now, health=health, reason=report.reason)
                pending[report.backend] = new
                # One line per change of state; "unknown" is up already.
                if old.health != health and (old.health, health) != ("unknown", "up"):
                    lines.append(f"{service.label}: backend "
                                 f"{ident_text(report.backend, service.family)} "
                                 f"{health}: {report.reason}"
                                 + (" (disabled: stays down)" if new.disabled else ""))
            self._commit_states(config, changes)
            return lines

    def set_disabled(self, service_ref, ip, port: int, disabled: bool) -> str:
        """Disable (administratively down: no new flows, whatever its
        health check says) or enable one backend of a service; republishes
        that service.  Returns a line for the operator.  Raises ConfigError
        when there is no such service or backend, RplbError when the
        tables cannot be published (nothing changes then)."""
        with self._change_lock:
            if self._closed:
                raise RplbError(9, "the load balancer is closed")
            config = self._tables.config
            try:
                service = config.service(service_ref)
                backend = service.backend(ip, port)
            except NotFoundError as err:
                raise ConfigError("<running>", "services", str(err)) from None
            key, backend_key = service.key, ident(backend)
            old = self._states.get(key, {}).get(backend_key, UNKNOWN)
            what = f"{service.label}: backend {backend.label}"
            if old.disabled == disabled:
                return f"{what} is already {'disabled' if disabled else 'enabled'}"
            new = _changed(old, time.time(), disabled=disabled)
            self._commit_states(config, {key: {backend_key: new}})
            if disabled:
                return f"{what} disabled: no new flows until rplbctl backend enable"
            return f"{what} enabled" + (f" (its health check says down: {new.reason})"
                                        if new.health == "down" else "")

    def _commit_states(self, config: Config,
                       changes: Dict[ServiceKey, Dict[Ident, BackendState]]) -> None:
        """Record changes of backend states, and publish the services
        whose availability they change (caller holds the change lock)."""
        changes = {key: backends for key, backends in changes.items() if backends}
        if not changes:
            return
        merged = {key: {**self._states.get(key, {}), **backends}
                  for key, backends in changes.items()}
        availability = dict(self._availability)
        keys = []
        for key, states in merged.items():
            new = Availability(
                frozenset(b for b, st in states.items() if st.health == "down"),
                frozenset(b for b, st in states.items() if st.disabled))
            if new != availability.get(key, AVAILABLE):
                keys.append(key)
                if new == AVAILABLE:
                    availability.pop(key, None)
                else:
                    availability[key] = new
        if not keys:
            with self._state_lock:
                self._states.update(merged)
            return
        plan = self._tables.plan(config, keys, availability)
        with self._state_lock:
            services, backends, maglevs = self._tables.arrays()
            try:
                self._lb.publish(services, backends, maglevs, config.timeouts,
                                 strict=config.strict)
            except BaseException:
                self._tables.rollback(plan)
                raise
            self._tables.commit(plan)
            self._account(plan)
            self._availability = availability
            self._states.update(merged)
            self._view = (config, plan.placed)

    def backend_states(self) -> Dict[ServiceKey, Dict[Ident, BackendState]]:
        """The backends whose state ever changed, by service (the others are
        UNKNOWN: up, never checked)."""
        with self._state_lock:
            return dict(self._states)

    def _edit(self, edit) -> List[str]:
        """Apply edit(running config), a Config edit of one service."""
        with self._change_lock:
            return self.apply(edit(self._tables.config))

    # ---- one-object edits (ConfigError when the edit is invalid) ----------

    def add_service(self, service: Service) -> List[str]:
        return self._edit(lambda c: c.with_service(service))

    def remove_service(self, service) -> List[str]:
        return self._edit(lambda c: c.without_service(service))

    def add_backend(self, service, backend: Backend) -> List[str]:
        return self._edit(lambda c: c.with_backend(service, backend))

    def remove_backend(self, service, ip, port: int) -> List[str]:
        return self._edit(lambda c: c.without_backend(service, ip, port))

    def set_weight(self, service, ip, port: int, weight: int) -> List[str]:
        return self._edit(lambda c: c.with_weight(service, ip, port, weight))

    def close(self) -> None:
        """Release the Maglev tables this object holds (before the
        LoadBalancer closes and EAL cleans up); no change is possible after."""
        with self._change_lock:
            self._closed = True
            self._tables.close()

    # ---- counter bookkeeping ---------------------------------------------------

    def _account(self, plan: Plan) -> None:
        """After a publish: counters of ids and slots that changed hands
        start from zero for their new owner; what reused slots counted stays
        with the service that had them (if it is still there)."""
        if plan.removed_incarnations:
            gone = np.isin(self._slot_incarnation, plan.removed_incarnations)
            self._slot_service[gone] = -1
            self._slot_incarnation[gone] = -1
        if plan.new_service_ids:
            ids = np.array(plan.new_service_ids, dtype=np.int64)
            now = self._lb.service_counters(slots=ids)
            self._service_base[ids] = _columns(now, _SERVICE_TOTALS)
            self._retired[ids] = 0
        if plan.new_backend_slots:
            slots = np.fromiter(plan.new_backend_slots, dtype=np.int64)
            owners = np.array([plan.new_backend_slots[s] for s in slots.tolist()], np.int64)
            now = _columns(self._lb.backend_counters(slots=slots), _SLOT_TOTALS)
            previous = self._slot_service[slots]
            kept = previous >= 0
            np.add.at(self._retired, previous[kept], (now - self._backend_base[slots])[kept])
            self._backend_base[slots] = now
            self._slot_incarnation[slots] = owners[:, 0]
            self._slot_service[slots] = owners[:, 1]

    # ---- reading ---------------------------------------------------------------

    def flow_sample(self, count: int = 16) -> List[dict]:
        """Up to count flows per worker: client, service, backend, state,
        idle seconds and the lcore of the worker that holds it (RplbError if
        a worker does not answer)."""
        # Requests are serialised in C (flow_sample.c), not by a lock here.
        flows = self._lb.flow_sample(count)
        config, placed = self._view
        by_id = {p.service_id: p.service for p in placed.values()}
        sample = []
        for f in flows:
            svc = by_id.get(f["service_id"])
            if svc is not None:
                service = svc.label
            else:
                vip = _sample_endpoint(f, "vip", "vip6")
                host, _, vport = vip.rpartition(":")
                service = f"{host}:{f['proto']}:{vport}"
            sample.append({
                "client": _sample_endpoint(f, "client", "client_ip6"),
                "service": service,
                "backend": _sample_endpoint(f, "backend", "backend_ip6"),
                "state": f["state"], "idle_s": f["idle_ms"] / 1000.0, "lcore": f["lcore"]})
        return sample

    def service_stats(self, limit: Optional[int] = None) -> List[dict]:
        """Per service (the first limit services; default all) and per
        backend: packets, bytes, new_flows, active_flows; and each
        backend's state (state_fields)."""
        return self.config_and_stats(limit)[1]

    def config_and_stats(self, limit: Optional[int] = None) -> Tuple[Config, List[dict]]:
        """The running configuration and service_stats() of it, from the
        same moment (a change may land between two separate calls).  The
        lock a change's publish takes is held only to copy the counters."""
        with self._state_lock:
            config, placed = self._view
            services = self._lb.service_counters()
            backends = self._lb.backend_counters()
            service_base = self._service_base.copy()
            backend_base = self._backend_base.copy()
            retired = self._retired.copy()
            slot_service = self._slot_service.copy()
            states = dict(self._states)
        slot_totals = _columns(backends, _SLOT_TOTALS) - backend_base
        active = np.asarray(backends["active_flows"], dtype=np.int64)
        owned = slot_service >= 0
        owners = slot_service[owned]
        totals = retired
        np.add.at(totals, owners, slot_totals[owned])
        active_flows = np.zeros(contract.MAX_SERVICES, np.int64)
        np.add.at(active_flows, owners, active[owned])
        own = _columns(services, _SERVICE_TOTALS) - service_base
        # Python ints once per column, not once per backend.
        packets, byte_counts, new_flows = (slot_totals[:, i].tolist() for i in range(3))
        active_list = active.tolist()
        result = []
        unknown = {False: state_fields(UNKNOWN, False), True: state_fields(UNKNOWN, True)}
        for svc in config.services[:limit]:
            p = placed[svc.key]
            sid = p.service_id
            entry = {"service": svc.label, "key": str(svc.key),
                     "packets": int(own[sid, 0] + totals[sid, 0]),
                     "bytes": int(own[sid, 1] + totals[sid, 1]),
                     "new_flows": int(totals[sid, 2]),
                     "active_flows": int(active_flows[sid]),
                     "health_check": svc.health.type if svc.health is not None else None,
                     "failing_open": p.failing_open,
                     "backends": [{"backend": b.label, "weight": b.weight,
                                   "packets": packets[slot], "bytes": byte_counts[slot],
                                   "new_flows": new_flows[slot],
                                   "active_flows": active_list[slot],
                                   **unknown[svc.health is not None]}
                                  for b, slot in zip(svc.backends, p.backend_slots)]}
            own_states = states.get(svc.key)
            if own_states:
                for b, backend_entry in zip(svc.backends, entry["backends"]):
                    state = own_states.get(ident(b))
                    if state is not None:
                        backend_entry.update(state_fields(state, svc.health is not None))
            result.append(entry)
        return config, result


def state_fields(state: BackendState, checked: bool) -> dict:
    """A backend's state as the readers show it: state (up/down), up
    (1/0), health (up/down/unknown; None without a check), reason,
    disabled, since (time.time() of the last change of state; None if it
    never changed)."""
    return {"state": state.state, "up": int(state.up),
            "health": state.health if checked else None, "reason": state.reason,
            "disabled": state.disabled, "since": state.since or None}


def ident_text(backend: Ident, family: int = 4) -> str:
    """ip:port of an Ident of a backend of that family ([ip]:port for
    IPv6): an Ident's integer does not say its family, its service does."""
    ip, port = backend
    if family == 6:
        return f"[{ipaddress.IPv6Address(ip)}]:{port}"
    return f"{ip >> 24}.{(ip >> 16) & 255}.{(ip >> 8) & 255}.{ip & 255}:{port}"


def endpoint_text(address, port, family: Optional[int] = None) -> str:
    """A flow sample's ip:port as the operator reads it: canonical, IPv6
    in brackets.  address: text, a 16-byte (IPv6) buffer, or an address
    object; family (4 or 6) where the sample says it."""
    if isinstance(address, str):
        text = address
    elif isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        text = str(address)
    else:                                    # 16 bytes in network order
        text = str(ipaddress.IPv6Address(bytes(np.asarray(address, np.uint8))))
    if family == 6 or (family is None and ":" in text):
        try:
            return f"[{ipaddress.IPv6Address(text.strip('[]'))}]:{port}"
        except ValueError:
            return f"[{text}]:{port}"
    return f"{text}:{port}"


def _sample_endpoint(sample: dict, name: str, ip6_field: str) -> str:
    """The sample's endpoint name (client, vip, backend): from its IPv6
    field when the flow is IPv6 (family 6), else from its (ip, port)."""
    address, port = sample[name]
    family = sample.get("family")
    if family == 6 and sample.get(ip6_field) is not None:
        address = sample[ip6_field]
    return endpoint_text(address, port, family)


def _columns(counters: np.ndarray, names) -> np.ndarray:
    """The named fields of a counter array as an int64 (n, len(names)) array."""
    return np.stack([np.asarray(counters[name], dtype=np.int64) for name in names], axis=-1)


