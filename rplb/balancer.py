"""The run-time API of the load balancer, for the CLI and for programs that
embed rplb: apply a whole configuration or edit one service or backend,
each change atomic, and read per-service and per-backend counters.
"""

from __future__ import annotations

import threading
from typing import Dict, List, Optional

import numpy as np

from rplb.config import Backend, Config, ConfigError, Service, ServiceKey
from rplb.tables import MAX_BACKENDS, IdAssigner, build_specs, spec_dtypes

_PACKETS, _BYTES, _NEW_FLOWS, _ACTIVE_FLOWS = range(4)


class Balancer:
    """Owns the configuration published to a running LoadBalancer.

    Every change goes through :meth:`apply`: the new tables are built and
    published completely, or (on any error) nothing changes and the error
    is raised: ConfigError for a bad configuration, RplbError for DPDK.
    """

    def __init__(self, lb, config: Optional[Config] = None):
        self._lb = lb
        self._ids = IdAssigner()
        self._dtypes = spec_dtypes()
        self._lock = threading.Lock()      # one change at a time
        self._config = Config()
        self._service_base = np.zeros((1024, 4), dtype=np.int64)
        self._backend_base = np.zeros((MAX_BACKENDS, 4), dtype=np.int64)
        # The fast path counts a flow's packets under its backend only; a
        # service's packets and bytes add up its backends' (_traffic).  A
        # backend slot stays its service's after the backend is removed
        # (replies of its flows may still be counted there) until the slot
        # is reused; then what it counted moves into _retired.  Services
        # are told apart by incarnation: a service removed and added again
        # under the same key starts from zero.
        self._incarnation: Dict[ServiceKey, int] = {}
        self._next_incarnation = 0
        self._slot_owner: Dict[int, int] = {}
        self._retired: Dict[int, np.ndarray] = {}
        if config is not None:
            self.apply(config)

    @property
    def config(self) -> Config:
        return self._config

    def apply(self, config: Config) -> List[str]:
        """Publish config atomically.  Returns notes for the operator (e.g.
        settings that only take effect at restart)."""
        notes = []
        with self._lock:
            if config.flow_table_size != self._lb.flow_table_size:
                notes.append(f"flow_table_size {config.flow_table_size} takes effect at the "
                             f"next start (running with {self._lb.flow_table_size})")
            fragments = config.fragments
            if (fragments.datagrams, fragments.held, fragments.timeout) != \
                    self._lb.fragment_bounds:
                running = dict(zip(("datagrams", "held", "timeout"), self._lb.fragment_bounds))
                notes.append(f"fragments {fragments.__dict__} take effect at the next start "
                             f"(running with {running})")
            try:
                service_ids, backend_ids, commit = self._ids.plan(config)
            except ValueError as err:
                raise ConfigError("<running>", "services", str(err)) from None
            specs = build_specs(config, service_ids, backend_ids, self._dtypes)
            new_service_slots = [i for k, i in service_ids.items()
                                 if k not in self._ids.service_ids]
            new_backends = {k: i & (MAX_BACKENDS - 1) for k, i in backend_ids.items()
                            if k not in self._ids.backend_ids}
            new_backend_slots = list(new_backends.values())
            self._lb.set_timeouts(config.timeouts)
            self._lb.publish(specs.services, specs.backends, specs.maglev, specs.maglev_size,
                             strict=config.strict)
            commit()
            self._track_owners(config)
            # A reused counter slot starts from zero for its new owner.
            if new_service_slots:
                self._service_base[new_service_slots] = self._lb.service_counters()[new_service_slots]
            if new_backend_slots:
                now = self._lb.backend_counters()
                self._retire_slots(new_backend_slots, now)
                self._backend_base[new_backend_slots] = now[new_backend_slots]
                for key, slot in new_backends.items():
                    self._slot_owner[slot] = self._incarnation[key[0]]
            self._service_base[:, _ACTIVE_FLOWS] = 0
            self._backend_base[:, _ACTIVE_FLOWS] = 0
            self._config = config
        return notes

    def _track_owners(self, config: Config) -> None:
        """Incarnations for new services; forget removed ones."""
        keys = {svc.key for svc in config.services}
        for key in list(self._incarnation):
            if key not in keys:
                self._retired.pop(self._incarnation.pop(key), None)
        for key in keys:
            if key not in self._incarnation:
                self._incarnation[key] = self._next_incarnation
                self._retired[self._next_incarnation] = np.zeros(2, dtype=np.int64)
                self._next_incarnation += 1

    def _retire_slots(self, slots, now) -> None:
        """Slots about to be reused: what they counted since their base
        stays with the service that owned them (if it is still there)."""
        for slot in slots:
            owner = self._slot_owner.pop(slot, None)
            if owner in self._retired:
                self._retired[owner] += (now[slot] - self._backend_base[slot])[[_PACKETS, _BYTES]]

    def _traffic(self, services, backends) -> Dict[ServiceKey, np.ndarray]:
        """Packets and bytes per service: its own counters (replies
        rewritten without a flow), its slots' (current and removed
        backends) and what its reused slots had counted."""
        by_incarnation = {inc: retired.copy() for inc, retired in self._retired.items()}
        for slot, owner in self._slot_owner.items():
            if owner in by_incarnation:
                by_incarnation[owner] += backends[slot][[_PACKETS, _BYTES]]
        return {key: by_incarnation[inc] + services[self._ids.service_ids[key]][[_PACKETS, _BYTES]]
                for key, inc in self._incarnation.items()}

    # ---- one-object edits (ConfigError when the edit is invalid) ----------

    def add_service(self, service: Service) -> None:
        self.apply(self._config.with_service(service))

    def remove_service(self, service) -> None:
        self.apply(self._config.without_service(service))

    def add_backend(self, service, backend: Backend) -> None:
        self.apply(self._config.with_backend(service, backend))

    def remove_backend(self, service, ip, port: int) -> None:
        self.apply(self._config.without_backend(service, ip, port))

    def set_weight(self, service, ip, port: int, weight: int) -> None:
        self.apply(self._config.with_weight(service, ip, port, weight))

    def flow_sample(self, count: int = 16) -> List[dict]:
        """Up to count flows per worker: client, service, backend, state and
        idle seconds (RplbError if a worker does not answer)."""
        with self._lock:
            flows = self._lb.flow_sample(count)
            services = {sid: key for key, sid in self._ids.service_ids.items()}
        by_key = {svc.key: svc for svc in self._config.services}
        sample = []
        for f in flows:
            key = services.get(f["service_id"])
            svc = by_key.get(key)
            sample.append({
                "client": f"{f['client'][0]}:{f['client'][1]}",
                "service": svc.label if svc else f"{f['vip'][0]}:{f['proto']}:{f['vip'][1]}",
                "backend": f"{f['backend'][0]}:{f['backend'][1]}",
                "state": f["state"], "idle_s": f["idle_ms"] / 1000.0})
        return sample

    # ---- counters ----------------------------------------------------------

    def service_stats(self) -> List[dict]:
        """Per service and backend: packets, bytes, new_flows, active_flows."""
        with self._lock:
            services = self._lb.service_counters() - self._service_base
            backends = self._lb.backend_counters() - self._backend_base
            traffic = self._traffic(services, backends)
            result = []
            for svc in self._config.services:
                row = services[self._ids.service_ids[svc.key]].copy()
                row[[_PACKETS, _BYTES]] = traffic[svc.key]
                entry = {"service": svc.label, "key": str(svc.key),
                         **_counter_dict(row), "backends": []}
                for b in svc.backends:
                    slot = (self._ids.backend_ids[(svc.key, str(b.ip), b.port)]
                            & (MAX_BACKENDS - 1))
                    entry["backends"].append({"backend": f"{b.ip}:{b.port}",
                                              "weight": b.weight,
                                              **_counter_dict(backends[slot])})
                result.append(entry)
        return result


def _counter_dict(row) -> dict:
    return {"packets": int(row[_PACKETS]), "bytes": int(row[_BYTES]),
            "new_flows": int(row[_NEW_FLOWS]), "active_flows": int(row[_ACTIVE_FLOWS])}
