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

What is published of a service also depends on which of its backends are
down (health checks) or disabled (the operator): :func:`effective` turns
the configured service and its :class:`Availability` into the weights its
Maglev table is built from and the backends published at all.  A backend
that is down keeps its id and counter slot; it leaves the Maglev table
(weight 0: no new flows), and with ``on_down: reset`` leaves the published
backends too, so that its flows fail the fast path's configured-backend
check and move to the current Maglev choice.  When it comes back, the
table built from the same backends and weights is the same table: it gets
its own entries back.
"""

from __future__ import annotations

import collections
import socket
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, Iterable, List, Mapping, Optional, Set, Tuple

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


Ident = Tuple[int, int]
"""A backend of a service, as (ip, port) integers."""


@dataclass(frozen=True)
class Availability:
    """Which backends of a service may not take new flows now: those its
    health check found down, those the operator disabled."""

    down: FrozenSet[Ident] = frozenset()
    disabled: FrozenSet[Ident] = frozenset()


AVAILABLE = Availability()


@dataclass(frozen=True)
class Effective:
    """What is published of a service's backends (in service.backends
    order): the weight its Maglev table is built with, and whether it is
    published at all (a backend not published is not configured for the
    fast path: its flows move).  failing_open: every backend that may
    serve is down, and the service serves with them all the same."""

    weights: Tuple[int, ...]
    published: Tuple[bool, ...]
    failing_open: bool = False


def effective(service: Service, availability: Availability) -> Effective:
    """The service's backends as published, given which are down or
    disabled:

    - a disabled backend never serves new flows;
    - a down backend (only where the service has a health check) serves
      no new flows, unless every backend that may serve (weight > 0, not
      disabled) is down: then on_all_down "open" serves with them all
      (as if none were down), "drop" with none;
    - a backend that does not serve keeps its flows (on_down "keep") or is
      not published (on_down "reset": they move).  A drained backend
      (weight 0) is down or not like any other.
    """
    health = service.health
    down = availability.down if health is not None else frozenset()
    disabled = availability.disabled
    if not down and not disabled:
        weights = tuple(b.weight for b in service.backends)
        return Effective(weights, (True,) * len(weights))
    keys = [(int(b.ip), b.port) for b in service.backends]
    usable = [b.weight > 0 and key not in disabled for b, key in zip(service.backends, keys)]
    serving = [use and key not in down for use, key in zip(usable, keys)]
    failing_open = any(usable) and not any(serving)
    if failing_open and health is not None and health.on_all_down == "open":
        serving = usable
    else:
        failing_open = False
    reset = health is not None and health.on_down == "reset"
    weights = tuple(b.weight if serve else 0 for b, serve in zip(service.backends, serving))
    published = tuple(
        serve or not reset or (key not in down and key not in disabled)
        for serve, key in zip(serving, keys))
    return Effective(weights, published, failing_open)


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
    # What its Maglev table was built from: (ip, port, weight, published)
    # per backend, and the table's size.
    shape: tuple = ()
    failing_open: bool = False


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


def _address_bytes(addresses) -> np.ndarray:
    """IPv6 addresses as an (n, 16) uint8 array, network byte order (the
    specs' vip6 / ip6)."""
    return np.frombuffer(b"".join(a.packed for a in addresses),
                         dtype=np.uint8).reshape(len(addresses), 16)


def _ident(backend) -> Tuple[int, int]:
    """(ip, port) as integers: hashing IPv4Address objects is slow, and a
    large reload looks up every backend."""
    return int(backend.ip), backend.port


def _table_shape(config: Config, service: Service, published: Effective) -> tuple:
    """What a service's Maglev table depends on: its backends, the
    weights it is built with, which backends it may name, its size."""
    return (tuple((b.ip, b.port, w, p) for b, w, p in
                  zip(service.backends, published.weights, published.published)),
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

    def plan(self, config: Config, keys: Optional[Iterable[ServiceKey]] = None,
             availability: Optional[Mapping[ServiceKey, Availability]] = None) -> Plan:
        """Plan the move to config; keys: the services that may differ
        (None: found by comparing); availability: which backends of each
        service are down or disabled (none where a service is missing).
        Raises ValueError when no counter slot is free; builds the changed
        services' Maglev tables (RplbError)."""
        if keys is None:
            keys = self.changed_keys(config)
        new_by_key = config._summary().by_key
        placed = dict(self.placed)
        plan = Plan(config, placed, Journal())
        availability = availability or {}
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
                    placed[key] = self._place(plan, config, old, new,
                                              availability.get(key, AVAILABLE))
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
        # Only the published backends have rows.
        self.backends.remove_many([i for i in old.backend_ids if i in self.backends.row_of],
                                  plan.journal)
        for slot in old.backend_slots:
            self.backend_slots.give_back(slot, plan.journal)
        self.service_slots.give_back(old.service_id, plan.journal)
        plan.removed_incarnations.append(old.incarnation)
        plan.changed += 1

    def _place(self, plan: Plan, config: Config, old: Optional[Placed],
               service: Service, availability: Availability = AVAILABLE) -> Placed:
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
            # One family per row: the other family's address stays zero.
            if service.vip.version == 6:
                row["vip6"] = _address_bytes([service.vip])
            else:
                row["vip"] = _network_order([int(service.vip)], 4)
            row["family"] = service.vip.version
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
            self.backends.remove_many([i for i in gone if i in self.backends.row_of], journal)
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
        ipv6 = service.vip.version == 6      # its backends' family too
        ports = np.fromiter((b.port for b in service.backends), np.int64, n)
        weights = np.fromiter((b.weight for b in service.backends), np.int64, n)
        rows = np.zeros(n, dtype=self.backends.array.dtype)
        if ipv6:
            packed = _address_bytes([b.ip for b in service.backends])
            rows["ip6"] = packed
            halves = packed.view(">u8").astype(np.uint64)    # (n, 2): hi, lo
        else:
            ips = np.fromiter((int(b.ip) for b in service.backends), np.int64, n)
            rows["ip"] = _network_order(ips, 4)
        rows["port"] = _network_order(ports, 2)
        rows["weight"] = weights
        rows["backend_id"] = backend_ids
        rows["service_id"] = service_id
        published = effective(service, availability)
        if all(published.published):
            self.backends.put(backend_ids, rows, journal)
        else:
            # A backend that is down with on_down "reset" keeps its id and
            # slot, but has no row: the fast path finds it not configured.
            shown = np.fromiter(published.published, bool, n)
            hidden = [i for i, show in zip(backend_ids, published.published)
                      if not show and i in self.backends.row_of]
            self.backends.remove_many(hidden, journal)
            self.backends.put([i for i, show in zip(backend_ids, published.published) if show],
                              rows[shown], journal)

        size = config.maglev_size(service)
        shape = _table_shape(config, service, published)
        effective_weights = np.fromiter(published.weights, np.int64, n)
        if old is not None and old.shape == shape:
            table = old.maglev        # same backends, weights and size: shared
        elif effective_weights.any():
            from rplb.dataplane import MaglevTable
            if ipv6:
                owners = maglev.build_table6_unchecked(halves[:, 0], halves[:, 1], ports,
                                                       effective_weights, size)
            else:
                owners = maglev.build_table_unchecked(ips, ports, effective_weights, size)
            ids = np.asarray(backend_ids, dtype=np.uint32)
            if not all(published.published):
                # The table may name published backends only: renumber its
                # owners into their list (a backend not published has
                # weight 0, so it owns no entry).
                shown = np.fromiter(published.published, bool, n)
                renumber = np.full(n, -1, dtype=np.int32)
                renumber[shown] = np.arange(int(shown.sum()), dtype=np.int32)
                owners = np.where(owners >= 0, renumber[np.maximum(owners, 0)], -1)
                ids = ids[shown]
            table = MaglevTable(owners, ids)
            plan.maglev_builds += 1
        else:
            table = None               # no backend serves new flows
        # The service's row carries its Maglev table (the list handed to C
        # is in row order).
        self.services.set_payload(service_id, table, journal)
        plan.changed += 1
        return Placed(service, service_id, tuple(backend_ids), table, size, incarnation,
                      tuple(contract.backend_slots(backend_ids).tolist()), shape,
                      published.failing_open)

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
