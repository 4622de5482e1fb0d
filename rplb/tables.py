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



class Journal:
    """Undo steps of a planned change, run backwards by rollback()."""

    def __init__(self) -> None:
        self._undo: List[Callable[[], None]] = []

    def record(self, undo: Callable[[], None]) -> None:
        self._undo.append(undo)

    def rollback(self) -> None:
        while self._undo:
            self._undo.pop()()

    def forget(self) -> list:
        """The change is kept: hand over the undo steps (to be freed)."""
        undo, self._undo = self._undo, []
        return undo


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
    """A dense spec array with one row per key (an id), and a payload per
    row; removing a row moves the last one into its place, so the array
    handed to C never has holes and no change moves more than one row."""

    def __init__(self, dtype: np.dtype, capacity: int):
        self.array = np.zeros(max(capacity, 1), dtype=dtype)
        self.count = 0
        self.row_of: Dict[int, int] = {}
        self.key_at: List[int] = []
        self.payload: List = []

    def view(self) -> np.ndarray:
        return self.array[:self.count]

    def put(self, keys: List[int], rows: np.ndarray, journal: Journal, payload=None) -> None:
        """rows (of the array's dtype) for keys: replacing a key's row where
        it has one, appended after the others otherwise."""
        fresh = [i for i, key in enumerate(keys) if key not in self.row_of]
        if len(fresh) < len(keys):
            at = np.array([self.row_of[keys[i]] for i in range(len(keys))
                           if keys[i] in self.row_of], dtype=np.int64)
            keep = np.ones(len(keys), dtype=bool)
            keep[fresh] = False
            old_rows = self.array[at].copy()
            old_payloads = [self.payload[r] for r in at.tolist()]
            self.array[at] = rows[keep]
            if payload is not None:
                for r in at.tolist():
                    self.payload[r] = payload

            def undo_replace() -> None:
                self.array[at] = old_rows
                for r, value in zip(at.tolist(), old_payloads):
                    self.payload[r] = value
            journal.record(undo_replace)
        if fresh:
            start, n = self.count, len(fresh)
            self.array[start:start + n] = rows[fresh]
            for offset, i in enumerate(fresh):
                self.row_of[keys[i]] = start + offset
                self.key_at.append(keys[i])
            self.payload.extend([payload] * n)
            self.count = start + n

            def undo_append() -> None:
                for key in self.key_at[start:]:
                    del self.row_of[key]
                del self.key_at[start:]
                del self.payload[start:]
                self.count = start
            journal.record(undo_append)

    def set_payload(self, key: int, payload, journal: Journal) -> None:
        row = self.row_of[key]
        old_payload = self.payload[row]
        self.payload[row] = payload

        def undo() -> None:
            self.payload[row] = old_payload
        journal.record(undo)

    def remove_many(self, keys: List[int], journal: Journal) -> None:
        """Remove the rows of keys: the surviving rows after the new end
        fill the holes below it, one vectorised move."""
        if not keys:
            return
        old_count = self.count
        removed_rows = [self.row_of.pop(key) for key in keys]
        new_count = old_count - len(keys)
        gone = set(removed_rows)
        holes = [row for row in removed_rows if row < new_count]
        movers = [row for row in range(new_count, old_count) if row not in gone]
        hole_values = self.array[holes].copy()
        tail_values = self.array[new_count:old_count].copy()
        hole_keys = [self.key_at[row] for row in holes]
        hole_payloads = [self.payload[row] for row in holes]
        tail_keys = self.key_at[new_count:]
        tail_payloads = self.payload[new_count:]
        if holes:
            self.array[holes] = self.array[movers]
        for hole, mover in zip(holes, movers):
            key = self.key_at[mover]
            self.key_at[hole] = key
            self.payload[hole] = self.payload[mover]
            self.row_of[key] = hole
        del self.key_at[new_count:]
        del self.payload[new_count:]
        self.count = new_count

        def undo() -> None:
            self.array[new_count:old_count] = tail_values
            if holes:
                self.array[holes] = hole_values
            for hole, key, payload in zip(holes, hole_keys, hole_payloads):
                self.key_at[hole] = key
                self.payload[hole] = payload
            self.key_at.extend(tail_keys)
            self.payload.extend(tail_payloads)
            for offset, key in enumerate(tail_keys):
                self.row_of[key] = new_count + offset
            for key, row in zip(keys, removed_rows):
                self.row_of[key] = row
            self.count = old_count
        journal.record(undo)

    def remove(self, key: int, journal: Journal) -> None:
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
    backend_slots: Tuple[int, ...] = ()  # of backend_ids


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


def _network_order(values, width: int) -> np.ndarray:
    """Host-order integers of width bytes as the unsigned values whose
    memory holds them in network byte order (how the C specs keep
    addresses and ports)."""
    return np.asarray(values, dtype=np.int64).astype(f">u{width}").view(f"=u{width}")


def _ident(backend) -> Tuple[int, int]:
    """(ip, port) as integers: hashing IPv4Address objects is slow, and a
    large reload looks up every backend."""
    return int(backend.ip), backend.port


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
            # Removals first: the slots they free may serve what is added;
            # then the file's order, so the first services take the first
            # slots (a few keys: in key order, without a scan of the file).
            keys = set(keys)
            removed = sorted((k for k in keys if k not in new_by_key), key=str)
            if len(keys) > 64:
                kept = [s.key for s in config.services if s.key in keys]
            else:
                kept = sorted((k for k in keys if k in new_by_key), key=str)
            for key in removed + kept:
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
        """Enough free slots for what the change adds, counting those it
        frees (they go back to the pool before it takes new ones)."""
        services = backends = 0
        for key in keys:
            new = new_by_key.get(key)
            old = self.placed.get(key)
            services += (new is not None) - (old is not None)
            had = set() if old is None else {_ident(b) for b in old.service.backends}
            has = set() if new is None else {_ident(b) for b in new.backends}
            backends += len(has - had) - len(had - has)
        if services > len(self.service_slots):
            raise ValueError(f"no free service counter slot (at most {contract.MAX_SERVICES})")
        if backends > len(self.backend_slots):
            raise ValueError(f"no free backend counter slot (at most {contract.MAX_BACKENDS} "
                             "including recently removed ones)")

    def _remove(self, plan: Plan, old: Placed) -> None:
        self.services.remove(old.service_id, plan.journal)
        self.backends.remove_many(list(old.backend_ids), plan.journal)
        for slot in old.backend_slots:
            self.backend_slots.give_back(slot, plan.journal)
        self.service_slots.give_back(old.service_id, plan.journal)
        plan.removed_incarnations.append(old.incarnation)
        plan.changed += 1

    def _place(self, plan: Plan, config: Config, old: Optional[Placed],
               service: Service) -> Placed:
        journal = plan.journal
        if old is None:
            service_id = self.service_slots.take(journal)
            incarnation = self._next_incarnation
            self._next_incarnation += 1

            def undo() -> None:
                self._next_incarnation -= 1
            journal.record(undo)
            plan.new_service_ids.append(service_id)
            row = np.zeros(1, dtype=self.services.array.dtype)
            row["vip"] = _network_order([int(service.vip)], 4)
            row["port"] = _network_order([service.port], 2)
            row["proto"] = IPPROTO[service.proto]
            row["service_id"] = service_id
            self.services.put([service_id], row, journal)
            old_ids: Dict[Tuple[int, int], int] = {}
        else:
            service_id, incarnation = old.service_id, old.incarnation
            old_ids = {_ident(b): i for b, i in zip(old.service.backends, old.backend_ids)}
            kept = {_ident(b) for b in service.backends}
            gone = [i for ident, i in old_ids.items() if ident not in kept]
            self.backends.remove_many(gone, journal)
            for backend_id in gone:
                self.backend_slots.give_back(contract.backend_slot(backend_id), journal)
        backend_ids = []
        for backend in service.backends:
            backend_id = old_ids.get(_ident(backend))
            if backend_id is None:
                slot = self.backend_slots.take(journal)
                backend_id = contract.backend_id(slot, self.backend_slots.generation[slot])
                plan.new_backend_slots[slot] = (incarnation, service_id)
            backend_ids.append(backend_id)
        n = len(service.backends)
        ips = np.fromiter((int(b.ip) for b in service.backends), np.int64, n)
        ports = np.fromiter((b.port for b in service.backends), np.int64, n)
        weights = np.fromiter((b.weight for b in service.backends), np.int64, n)
        rows = np.zeros(n, dtype=self.backends.array.dtype)
        rows["ip"] = _network_order(ips, 4)
        rows["port"] = _network_order(ports, 2)
        rows["weight"] = weights
        rows["backend_id"] = backend_ids
        rows["service_id"] = service_id
        self.backends.put(backend_ids, rows, journal)

        size = config.maglev_size(service)
        if old is not None and _table_shape(self.config, old.service) == \
                _table_shape(config, service):
            table = old.maglev        # same backends, weights and size: shared
        elif weights.any():
            from rplb.dataplane import MaglevTable
            owners = maglev.build_table_unchecked(ips, ports, weights, size)
            table = MaglevTable(owners, np.asarray(backend_ids, dtype=np.uint32))
            plan.maglev_builds += 1
        else:
            table = None               # no backend of weight > 0
        # The service's row carries its Maglev table (the list handed to C
        # is in row order).
        self.services.set_payload(service_id, table, journal)
        plan.changed += 1
        return Placed(service, service_id, tuple(backend_ids), table, size, incarnation,
                      tuple(contract.backend_slots(backend_ids).tolist()))

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
