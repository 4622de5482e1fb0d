"""What the control plane and the C fast path share, read from the C side.

Every limit, struct layout, enum and the backend-id encoding is defined
once, in the C headers (csrc/rplb.h, csrc/stats.h), and exported by the
tables of csrc/contract.c through the extension.  This module turns them
into Python constants and numpy dtypes, so nothing here is written by
hand: a field or limit changed in C reaches Python with the next build
(tests/test_contract.py checks the two sides agree).

Importing it loads the compiled extension (and so DPDK's shared
libraries), but initialises nothing: configuration tools use it without
EAL.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from rplb import dataplane

__all__ = ["BACKEND_GENERATIONS", "BACKEND_SLOT_BITS", "BURST", "CONSTANTS", "DEFAULT_FRAGMENTS",
           "DROP_NAMES", "DTYPES", "EVENT_NAMES", "FLOW_SAMPLE_MAX", "FLOW_STATE_NAMES",
           "MAGLEV_MAX_SIZE", "MAGLEV_MIN_SIZE", "MAX_BACKENDS", "MAX_FLOW_TABLE_SIZE",
           "MAX_FRAGMENT_DATAGRAMS", "MAX_FRAGMENT_HELD", "MAX_FRAGMENT_TIMEOUT", "MAX_SERVICES",
           "MAX_TIMEOUT", "MAX_WEIGHT", "SIDE_NAMES", "backend_generation", "backend_id",
           "backend_slot", "backend_slots", "lcore_counters_dict", "maglev_memory",
           "summable", "tables_memory"]

#: Every constant of rplb_constants, by its C name.
CONSTANTS: Dict[str, int] = dataplane.constants()

MAX_SERVICES: int = CONSTANTS["RPLB_MAX_SERVICES"]
MAX_BACKENDS: int = CONSTANTS["RPLB_MAX_BACKENDS"]
BACKEND_SLOT_BITS: int = CONSTANTS["RPLB_BACKEND_SLOT_BITS"]
#: A backend slot's ids repeat after this many reuses of the slot.
BACKEND_GENERATIONS: int = CONSTANTS["RPLB_BACKEND_GENERATIONS"]
MAX_TIMEOUT: int = CONSTANTS["RPLB_MAX_TIMEOUT_S"]
MAX_WEIGHT: int = CONSTANTS["RPLB_MAX_WEIGHT"]
MAGLEV_MIN_SIZE: int = CONSTANTS["RPLB_MAGLEV_MIN_SIZE"]
MAGLEV_MAX_SIZE: int = CONSTANTS["RPLB_MAGLEV_MAX_SIZE"]
MAX_FLOW_TABLE_SIZE: int = CONSTANTS["RPLB_MAX_FLOW_TABLE_SIZE"]
FLOW_SAMPLE_MAX: int = CONSTANTS["RPLB_FLOW_SAMPLE_MAX"]
#: Each worker's IPv4 fragment state (csrc/fragment_table.h): the limits of
#: the services file's `fragments`, and their defaults.
MAX_FRAGMENT_DATAGRAMS: int = CONSTANTS["RPLB_FRAGMENT_MAX_DATAGRAMS"]
MAX_FRAGMENT_HELD: int = CONSTANTS["RPLB_FRAGMENT_MAX_HELD"]
MAX_FRAGMENT_TIMEOUT: int = CONSTANTS["RPLB_FRAGMENT_MAX_TIMEOUT_S"]
DEFAULT_FRAGMENTS: Tuple[int, int, int] = (CONSTANTS["RPLB_FRAGMENT_DEFAULT_DATAGRAMS"],
                                           CONSTANTS["RPLB_FRAGMENT_DEFAULT_HELD"],
                                           CONSTANTS["RPLB_FRAGMENT_DEFAULT_TIMEOUT_S"])
#: The worker's rx burst and tx buffer size.
BURST: int = CONSTANTS["RPLB_BURST"]

_NAMES = dataplane.enum_names()
DROP_NAMES: Tuple[str, ...] = _NAMES["drops"]
EVENT_NAMES: Tuple[str, ...] = _NAMES["events"]
#: Flow states, in enum order; each has its own idle timeout (config.Timeouts).
FLOW_STATE_NAMES: Tuple[str, ...] = _NAMES["flow_states"]
#: Port roles by side index: frontend (clients), backend (servers).
SIDE_NAMES: Tuple[str, ...] = _NAMES["sides"]

_INTEGER_KINDS = {("u", 1): np.uint8, ("u", 2): np.uint16, ("u", 4): np.uint32,
                  ("u", 8): np.uint64, ("i", 1): np.int8, ("i", 2): np.int16,
                  ("i", 4): np.int32, ("i", 8): np.int64}


def _dtypes(layout, sizes) -> Dict[str, np.dtype]:
    """numpy dtypes of the C structs, from the layout table: offsets and
    itemsize are the C compiler's, padding included."""
    dtypes: Dict[str, np.dtype] = {}
    # A struct's fields may be structs of their own: build those first.
    pending = list(sizes)
    while pending:
        name = pending.pop(0)
        own = [f for f in layout if f[0] == name]
        if any(kind == "s" and ftype not in dtypes for *_, kind, ftype in own):
            pending.append(name)
            continue
        formats = []
        for _, field, _, size, count, kind, ftype in own:
            base = dtypes[ftype] if kind == "s" else np.dtype(_INTEGER_KINDS[(kind, size)])
            formats.append(base if count == 1 else (base, (count,)))
        dtypes[name] = np.dtype({"names": [f[1] for f in own], "formats": formats,
                                 "offsets": [f[2] for f in own], "itemsize": sizes[name]})
    return dtypes


#: numpy dtypes of the structs shared with C, by C struct name.
DTYPES: Dict[str, np.dtype] = _dtypes(dataplane.layout(), dataplane.struct_sizes())


def backend_id(slot: int, generation: int) -> int:
    """The id of the backend in slot, in its generation (modulo
    BACKEND_GENERATIONS): csrc/rplb.h's rplb_backend_id()."""
    return dataplane.backend_id(slot, generation % BACKEND_GENERATIONS)


def backend_slot(backend_id: int) -> int:
    """The counter slot of a backend id (rplb_backend_slot())."""
    return dataplane.backend_slot(backend_id)


def backend_generation(backend_id: int) -> int:
    return dataplane.backend_generation(backend_id)


def backend_slots(backend_ids) -> np.ndarray:
    """backend_slot() of each id of an array (uint32)."""
    return dataplane.backend_slots(backend_ids)


def tables_memory(n_services: int, n_backends: int) -> int:
    """Bytes one table generation takes, its Maglev tables apart."""
    return dataplane.tables_memory(n_services, n_backends)


def maglev_memory(size: int, n_backends: int) -> int:
    """Bytes one service's Maglev table of size entries takes."""
    return dataplane.maglev_memory(size, n_backends)


def summable(counters: np.ndarray) -> np.ndarray:
    """A copy of a counter array with every field int64, so per-worker
    arrays add up and gauges may go below a base without wrapping."""
    wide = np.dtype([(name, np.int64) for name in counters.dtype.names])
    out = np.empty(counters.shape, dtype=wide)
    for name in counters.dtype.names:
        out[name] = counters[name]
    return out


def lcore_counters_dict(record) -> dict:
    """One struct rplb_lcore_counters as {'port': [{...} by side], 'drops':
    {reason: n}, 'events': {event: n}} (names from the C side)."""
    ports = record["port"]
    return {"port": [{name: int(ports[side][name]) for name in ports.dtype.names}
                     for side in range(len(SIDE_NAMES))],
            "drops": dict(zip(DROP_NAMES, (int(v) for v in record["drops"]))),
            "events": dict(zip(EVENT_NAMES, (int(v) for v in record["events"])))}
