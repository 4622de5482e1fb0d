"""Turn a Config into the spec arrays the C tables are built from.

Services and backends get *stable ids*: the index of their counters in the
fast path, kept for as long as they stay configured.  A backend id also
carries a generation, so a flow that still points at a removed backend is
never mistaken for a new backend that reuses the same counter slot.

No DPDK here except the struct layout, which comes from the C side
(``rplb.dataplane.spec_layout``) so the dtypes cannot drift from the C
structs.
"""

from __future__ import annotations

import collections
import socket
from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

from rplb import maglev
from rplb.config import Config, ServiceKey

MAX_SERVICES = 1024
BACKEND_SLOT_BITS = 13
MAX_BACKENDS = 1 << BACKEND_SLOT_BITS
_GENERATION_LIMIT = 1 << (32 - BACKEND_SLOT_BITS)

IPPROTO = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}

BackendKey = Tuple[ServiceKey, str, int]     # (service, backend ip, backend port)


def spec_dtypes(layout=None) -> Dict[str, np.dtype]:
    """numpy dtypes of the C spec structs, from the C layout table."""
    if layout is None:
        from rplb.dataplane import spec_layout
        layout = spec_layout()
    fields, sizes = layout
    kinds = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
    dtypes = {}
    for struct_name, size in sizes.items():
        own = [f for f in fields if f[0] == struct_name]
        dtypes[struct_name] = np.dtype({
            "names": [f[1] for f in own],
            "formats": [kinds[f[3]] for f in own],
            "offsets": [f[2] for f in own],
            "itemsize": size,
        })
    return dtypes


class _SlotPool:
    """Counter slots handed out first-freed-first so a freed slot rests as
    long as possible before reuse (its old flows age out meanwhile)."""

    def __init__(self, size: int):
        self.free = collections.deque(range(size))
        self.generation = [0] * size

    def take(self) -> int:
        return self.free.popleft()

    def give_back(self, slot: int) -> None:
        self.generation[slot] = (self.generation[slot] + 1) % _GENERATION_LIMIT
        self.free.append(slot)


@dataclass
class TableSpecs:
    services: np.ndarray
    backends: np.ndarray
    maglev: np.ndarray
    maglev_size: int


class IdAssigner:
    """Stable service ids and backend ids across configuration changes."""

    def __init__(self):
        self._service_slots = _SlotPool(MAX_SERVICES)
        self._backend_slots = _SlotPool(MAX_BACKENDS)
        self.service_ids: Dict[ServiceKey, int] = {}
        self.backend_ids: Dict[BackendKey, int] = {}

    @staticmethod
    def backend_keys(config: Config):
        return [(svc.key, str(b.ip), b.port) for svc in config.services for b in svc.backends]

    def plan(self, config: Config):
        """Ids for every service and backend of config, without committing.

        Returns (service_ids, backend_ids, commit): call commit() once the
        tables built from them are published; drop it to change nothing."""
        service_ids = {}
        new_services = [s.key for s in config.services if s.key not in self.service_ids]
        new_backends = [k for k in self.backend_keys(config) if k not in self.backend_ids]
        if len(new_services) > len(self._service_slots.free):
            raise ValueError(f"no free service counter slot (at most {MAX_SERVICES})")
        if len(new_backends) > len(self._backend_slots.free):
            raise ValueError(f"no free backend counter slot (at most {MAX_BACKENDS} "
                             "including recently removed ones)")
        # Peek at the slots that would be taken, in order, without taking them.
        free_services = list(self._service_slots.free)[:len(new_services)]
        free_backends = list(self._backend_slots.free)[:len(new_backends)]
        fresh_service = dict(zip(new_services, free_services))
        fresh_backend = {
            key: slot | (self._backend_slots.generation[slot] << BACKEND_SLOT_BITS)
            for key, slot in zip(new_backends, free_backends)}
        for svc in config.services:
            service_ids[svc.key] = self.service_ids.get(svc.key, fresh_service.get(svc.key))
        backend_ids = {key: self.backend_ids.get(key, fresh_backend.get(key))
                       for key in self.backend_keys(config)}

        def commit():
            for _ in new_services:
                self._service_slots.take()
            for _ in new_backends:
                self._backend_slots.take()
            for key in set(self.service_ids) - set(service_ids):
                self._service_slots.give_back(self.service_ids[key])
            for key in set(self.backend_ids) - set(backend_ids):
                self._backend_slots.give_back(self.backend_ids[key] & (MAX_BACKENDS - 1))
            self.service_ids = dict(service_ids)
            self.backend_ids = dict(backend_ids)

        return service_ids, backend_ids, commit


def _ip_be(ip) -> int:
    """An IPv4 address as the uint32 whose memory holds it in network order."""
    return int.from_bytes(ip.packed, "little")


def _port_be(port: int) -> int:
    return int.from_bytes(port.to_bytes(2, "big"), "little")


def build_specs(config: Config, service_ids, backend_ids, dtypes) -> TableSpecs:
    """Spec arrays for the C table builder, Maglev tables included."""
    service_dtype = dtypes["rplb_service_spec"]
    backend_dtype = dtypes["rplb_backend_spec"]
    n_backends = sum(len(s.backends) for s in config.services)
    size = config.maglev_table_size
    services = np.zeros(len(config.services), dtype=service_dtype)
    backends = np.zeros(n_backends, dtype=backend_dtype)
    tables = np.full((len(config.services), size), -1, dtype=np.int32)

    first = 0
    for index, svc in enumerate(config.services):
        services[index] = (_ip_be(svc.vip), _port_be(svc.port), IPPROTO[svc.proto], 0,
                           service_ids[svc.key], first, len(svc.backends))
        for offset, b in enumerate(svc.backends):
            backends[first + offset] = (_ip_be(b.ip), _port_be(b.port), b.weight,
                                        backend_ids[(svc.key, str(b.ip), b.port)], index)
        if svc.backends:
            owners = maglev.build_table([int(b.ip) for b in svc.backends],
                                        [b.port for b in svc.backends],
                                        [b.weight for b in svc.backends], size)
            tables[index] = np.where(owners >= 0, owners + first, -1)
        first += len(svc.backends)
    return TableSpecs(services, backends, tables, size)
