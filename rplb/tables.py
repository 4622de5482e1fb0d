"""Config -> the C tables, one changed service at a time.

Services and backends get *stable ids*: the index of their counters in the
fast path, kept for as long as they stay configured.  A backend id also
carries a generation (csrc/rplb.h: rplb_backend_id), so a flow that still
points at a removed backend is never mistaken for a new backend that reuses
the same counter slot.

The spec arrays handed to C are kept between changes, one row per service
and per backend, and a change replaces only its services' rows; each
service's Maglev table is built once per change of that service (its
backends, weights or size) and shared by the table generations that keep
it (rplb.dataplane.MaglevTable).  So a change costs what it changes, not
what is configured.

:class:`TableState` plans a change (ids, rows, Maglev tables: the slow part,
done without holding the readers' lock), then either commits it once the
tables are published or rolls it back.  The struct layouts come from the C
side (rplb.contract).
"""

from __future__ import annotations

import collections
import socket
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple

import numpy as np

from rplb import contract, maglev
from rplb.config import Config, Service, ServiceKey

IPPROTO = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}

BackendKey = Tuple[ServiceKey, str, int]     # (service, backend ip, backend port)


class Journal:
    """Undo steps of a planned change, run backwards by rollback()."""

    def __init__(self) -> None:
        self._undo: List[Callable[[], None]] = []

    def record(self, undo: Callable[[], None]) -> None:
        self._undo.append(undo)

    def rollback(self) -> None:
        while self._undo:
            self._undo.pop()()


class SlotPool:
    """Counter slots handed out first-freed-first, so a freed slot rests as
    long as possible before reuse (its old flows age out meanwhile); each
    slot's generation goes up when it is given back."""

    def __init__(self, size: int, generations: int = 1):
        self.free = collections.deque(range(size))
        self.generation = [0] * size
        self._generations = generations

    def __len__(self) -> int:
        return len(self.free)

    def take(self, journal: Journal) -> int:
        slot = self.free.popleft()
        journal.record(lambda: self.free.appendleft(slot))
        return slot

    def give_back(self, slot: int, journal: Journal) -> None:
        previous = self.generation[slot]
        self.generation[slot] = (previous + 1) % self._generations
        self.free.append(slot)

        def undo() -> None:
            self.free.pop()
            self.generation[slot] = previous
        journal.record(undo)


class SpecRows:
    """A dense spec array with one row per key, and a payload per row;
    removing a row moves the last one into its place, so the array handed
    to C never has holes and no change moves more than one row."""

    def __init__(self, dtype: np.dtype, capacity: int):
        self.array = np.zeros(max(capacity, 1), dtype=dtype)
        self.count = 0
        self.row_of: Dict = {}
        self.key_at: List = []
        self.payload: List = []

    def view(self) -> np.ndarray:
        return self.array[:self.count]

    def set(self, key, values: tuple, journal: Journal, payload=None) -> None:
        row = self.row_of.get(key)
        if row is None:
            row = self.count
            self.count += 1
            self.row_of[key] = row
            self.key_at.append(key)
            self.payload.append(payload)

            def undo_append() -> None:
                self.count -= 1
                del self.row_of[key]
                self.key_at.pop()
                self.payload.pop()
            journal.record(undo_append)
        else:
            old_values, old_payload = self.array[row].copy(), self.payload[row]

            def undo_set() -> None:
                self.array[row] = old_values
                self.payload[row] = old_payload
            journal.record(undo_set)
            self.payload[row] = payload
        self.array[row] = values

    def set_payload(self, key, payload, journal: Journal) -> None:
        row = self.row_of[key]
        old_payload = self.payload[row]
        self.payload[row] = payload

        def undo() -> None:
            self.payload[row] = old_payload
        journal.record(undo)

    def remove(self, key, journal: Journal) -> None:
        row = self.row_of.pop(key)
        last = self.count - 1
        removed_values, removed_payload = self.array[row].copy(), self.payload[row]
        if row != last:
            moved = self.key_at[last]
            self.array[row] = self.array[last]
            self.key_at[row] = moved
            self.payload[row] = self.payload[last]
            self.row_of[moved] = row
        self.key_at.pop()
        self.payload.pop()
        self.count = last

        def undo() -> None:
            if row != last:
                self.array[last] = self.array[row]
                self.key_at.append(self.key_at[row])
                self.payload.append(self.payload[row])
                self.row_of[self.key_at[last]] = last
                self.key_at[row] = key
                self.payload[row] = removed_payload
            else:
                self.key_at.append(key)
                self.payload.append(removed_payload)
            self.array[row] = removed_values
            self.row_of[key] = row
            self.count = last + 1
        journal.record(undo)


@dataclass(frozen=True)
class Placed:
    """A configured service as the tables hold it."""

    service: Service
    service_id: int
    backend_ids: Tuple[int, ...]         # in service.backends order
    maglev: Optional[object]             # MaglevTable; None: no backend of weight > 0
    maglev_size: int
    incarnation: int                     # a service removed and added again is new

    def backend_slots(self) -> List[int]:
        return [contract.backend_slot(i) for i in self.backend_ids]


@dataclass
class Plan:
    """A change planned against the tables, not yet published."""

    config: Config
    placed: Dict[ServiceKey, Placed]
    journal: Journal
    changed: int = 0                             # services whose rows or tables changed
    new_service_ids: List[int] = field(default_factory=list)
    # Backend slots taken by this change -> (incarnation, service id) of
    # their service (its counters start from the slot's counts now).
    new_backend_slots: Dict[int, Tuple[int, int]] = field(default_factory=dict)
    removed_incarnations: List[int] = field(default_factory=list)
    maglev_builds: int = 0


def _ip_be(ip) -> int:
    """An IPv4 address as the uint32 whose memory holds it in network order."""
    return int.from_bytes(ip.packed, "little")


def _port_be(port: int) -> int:
    return int.from_bytes(port.to_bytes(2, "big"), "little")


def _table_shape(config: Config, service: Service) -> tuple:
    """What a service's Maglev table depends on."""
    return (tuple((b.ip, b.port, b.weight) for b in service.backends),
            config.maglev_size(service))


class TableState:
    """The ids, spec rows and Maglev tables of the published configuration.

    plan() computes a change against it (journaled), publish the plan's
    arrays, then commit() it, or rollback() it on failure.  One change at
    a time (the caller serialises them).
    """

    def __init__(self) -> None:
        dtypes = contract.DTYPES
        self.config = Config()
        self.placed: Dict[ServiceKey, Placed] = {}
        self.services = SpecRows(dtypes["rplb_service_spec"], contract.MAX_SERVICES)
        self.backends = SpecRows(dtypes["rplb_backend_spec"], contract.MAX_BACKENDS)
        self.service_slots = SlotPool(contract.MAX_SERVICES)
        self.backend_slots = SlotPool(contract.MAX_BACKENDS, contract.BACKEND_GENERATIONS)
        self._next_incarnation = 0

    # ---- planning ------------------------------------------------------------

    def changed_keys(self, config: Config) -> Set[ServiceKey]:
        """Keys of the services config adds, removes or changes (a service
        changes when its Service differs or its Maglev size does)."""
        old = self.config._summary().by_key
        new = config._summary().by_key
        keys = set(old.keys() ^ new.keys())
        same_sizes = config.maglev_table_size == self.config.maglev_table_size
        for key, service in new.items():
            before = old.get(key)
            if before is None:
                continue
            if (before is not service and before != service) or (
                    not same_sizes and
                    self.config.maglev_size(before) != config.maglev_size(service)):
                keys.add(key)
        return keys

    def plan(self, config: Config, keys: Optional[Iterable[ServiceKey]] = None) -> Plan:
        """Plan the move to config; keys: the services that may differ
        (None: found by comparing).  Raises ValueError when no counter slot
        is free; builds the changed services' Maglev tables (RplbError)."""
        if keys is None:
            keys = self.changed_keys(config)
        new_by_key = config._summary().by_key
        placed = dict(self.placed)
        plan = Plan(config, placed, Journal())
        try:
            self._check_room(config, keys, new_by_key)
            for key in sorted(keys, key=str):
                old = self.placed.get(key)
                new = new_by_key.get(key)
                if old is not None and new is None:
                    self._remove(plan, old)
                    del placed[key]
                elif new is not None:
                    placed[key] = self._place(plan, config, old, new)
        except BaseException:
            plan.journal.rollback()
            raise
        return plan

    def _check_room(self, config: Config, keys, new_by_key) -> None:
        add_services = sum(1 for k in keys if k not in self.placed and k in new_by_key)
        if add_services > len(self.service_slots):
            raise ValueError(f"no free service counter slot (at most {contract.MAX_SERVICES})")
        add_backends = 0
        for key in keys:
            new = new_by_key.get(key)
            if new is None:
                continue
            old = self.placed.get(key)
            had = set() if old is None else {b.key for b in old.service.backends}
            add_backends += sum(1 for b in new.backends if b.key not in had)
        if add_backends > len(self.backend_slots):
            raise ValueError(f"no free backend counter slot (at most {contract.MAX_BACKENDS} "
                             "including recently removed ones)")

    def _remove(self, plan: Plan, old: Placed) -> None:
        key = old.service.key
        self.services.remove(key, plan.journal)
        for backend, backend_id in zip(old.service.backends, old.backend_ids):
            self.backends.remove((key, str(backend.ip), backend.port), plan.journal)
            self.backend_slots.give_back(contract.backend_slot(backend_id), plan.journal)
        self.service_slots.give_back(old.service_id, plan.journal)
        plan.removed_incarnations.append(old.incarnation)
        plan.changed += 1

    def _place(self, plan: Plan, config: Config, old: Optional[Placed],
               service: Service) -> Placed:
        key = service.key
        journal = plan.journal
        if old is None:
            service_id = self.service_slots.take(journal)
            incarnation = self._next_incarnation
            self._next_incarnation += 1

            def undo() -> None:
                self._next_incarnation -= 1
            journal.record(undo)
            plan.new_service_ids.append(service_id)
            self.services.set(key, (_ip_be(service.vip), _port_be(service.port),
                                    IPPROTO[service.proto], 0, service_id), journal)
            old_ids: Dict[tuple, int] = {}
        else:
            service_id, incarnation = old.service_id, old.incarnation
            old_ids = {b.key: i for b, i in zip(old.service.backends, old.backend_ids)}
            kept = {b.key for b in service.backends}
            for backend in old.service.backends:
                if backend.key not in kept:
                    self.backends.remove((key, str(backend.ip), backend.port), journal)
                    self.backend_slots.give_back(contract.backend_slot(old_ids[backend.key]),
                                                 journal)
        backend_ids = []
        for backend in service.backends:
            backend_id = old_ids.get(backend.key)
            if backend_id is None:
                slot = self.backend_slots.take(journal)
                backend_id = contract.backend_id(slot, self.backend_slots.generation[slot])
                plan.new_backend_slots[slot] = (incarnation, service_id)
            backend_ids.append(backend_id)
            self.backends.set((key, str(backend.ip), backend.port),
                              (_ip_be(backend.ip), _port_be(backend.port), backend.weight,
                               backend_id, service_id), journal)
        size = config.maglev_size(service)
        if old is not None and _table_shape(self.config, old.service) == \
                _table_shape(config, service):
            table = old.maglev        # same backends, weights and size: shared
        else:
            table = self._build_maglev(service, backend_ids, size)
            plan.maglev_builds += 1
        # The service's row carries its Maglev table (the list handed to C
        # is in row order).
        self.services.set_payload(key, table, journal)
        plan.changed += 1
        return Placed(service, service_id, tuple(backend_ids), table, size, incarnation)

    @staticmethod
    def _build_maglev(service: Service, backend_ids: List[int], size: int):
        if not any(b.weight > 0 for b in service.backends):
            return None
        from rplb.dataplane import MaglevTable
        owners = maglev.build_table([int(b.ip) for b in service.backends],
                                    [b.port for b in service.backends],
                                    [b.weight for b in service.backends], size)
        return MaglevTable(owners, backend_ids)

    # ---- after the publish ---------------------------------------------------

    def arrays(self) -> Tuple[np.ndarray, np.ndarray, List]:
        """(service specs, backend specs, Maglev tables in service row order)."""
        return self.services.view(), self.backends.view(), self.services.payload

    def commit(self, plan: Plan) -> None:
        self.config = plan.config
        self.placed = plan.placed

    @staticmethod
    def rollback(plan: Plan) -> None:
        plan.journal.rollback()

    def close(self) -> None:
        """Drop every Maglev table reference (the published generations
        hold their own); the state is unusable afterwards."""
        for table in self.services.payload:
            if table is not None:
                table.close()
        for placed in self.placed.values():
            if placed.maglev is not None:
                placed.maglev.close()
        self.services.payload = [None] * len(self.services.payload)
        self.placed = {}
