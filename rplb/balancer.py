"""The run-time API of the load balancer, for the CLI and for programs that
embed rplb: apply a whole configuration or edit one service or backend,
each change atomic, and read per-service and per-backend counters.

A change rebuilds only the services it changes (rplb.tables), without
holding the lock readers take: status, counters, telemetry and Prometheus
keep answering while a large reload is being built.  Only publishing the
new tables and committing the bookkeeping hold it.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from rplb import contract
from rplb.config import (Backend, Config, ConfigError, Service, ServiceKey, edit_lineage,
                         forget_lineage)
from rplb.errors import RplbError
from rplb.gc_control import LARGE_CHANGE, freeze_long_lived, quiet_gc, release_slowly
from rplb.tables import Placed, Plan, TableState

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
            try:
                plan = self._tables.plan(config, keys)
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
                forget_lineage(config)
                old_view, self._view = self._view, (config, plan.placed)
            if plan.changed > LARGE_CHANGE:
                freeze_long_lived()
                old_config, old_placed = old_view
                release_slowly([list(old_config.services), list(old_placed.values()),
                                plan.journal.forget()])
        return notes

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
        """Up to count flows per worker: client, service, backend, state and
        idle seconds (RplbError if a worker does not answer)."""
        # Requests are serialised in C (flow_sample.c), not by a lock here.
        flows = self._lb.flow_sample(count)
        config, placed = self._view
        by_id = {p.service_id: p.service for p in placed.values()}
        sample = []
        for f in flows:
            svc = by_id.get(f["service_id"])
            sample.append({
                "client": f"{f['client'][0]}:{f['client'][1]}",
                "service": svc.label if svc else f"{f['vip'][0]}:{f['proto']}:{f['vip'][1]}",
                "backend": f"{f['backend'][0]}:{f['backend'][1]}",
                "state": f["state"], "idle_s": f["idle_ms"] / 1000.0})
        return sample

    def service_stats(self, limit: Optional[int] = None) -> List[dict]:
        """Per service (the first limit services; default all) and per
        backend: packets, bytes, new_flows, active_flows."""
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
        for svc in config.services[:limit]:
            p = placed[svc.key]
            sid = p.service_id
            entry = {"service": svc.label, "key": str(svc.key),
                     "packets": int(own[sid, 0] + totals[sid, 0]),
                     "bytes": int(own[sid, 1] + totals[sid, 1]),
                     "new_flows": int(totals[sid, 2]),
                     "active_flows": int(active_flows[sid]),
                     "backends": [{"backend": b.label, "weight": b.weight,
                                   "packets": packets[slot], "bytes": byte_counts[slot],
                                   "new_flows": new_flows[slot],
                                   "active_flows": active_list[slot]}
                                  for b, slot in zip(svc.backends, p.backend_slots)]}
            result.append(entry)
        return config, result


def _columns(counters: np.ndarray, names) -> np.ndarray:
    """The named fields of a counter array as an int64 (n, len(names)) array."""
    return np.stack([np.asarray(counters[name], dtype=np.int64) for name in names], axis=-1)


