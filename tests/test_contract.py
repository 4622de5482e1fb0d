"""What C and Python share is defined once, in the C headers, and read by
Python from the tables of csrc/contract.c (rplb.contract).  These checks
fail when the two sides disagree: a struct field the tables leave out, an
enum name missing, a Python name that is not the C side's."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from rplb import contract, dataplane
from rplb.config import Timeouts

STRUCTS = ("rplb_service_spec", "rplb_backend_spec", "rplb_port_counters",
           "rplb_lcore_counters", "rplb_service_counters", "rplb_backend_counters",
           "rplb_flow_sample")


@pytest.mark.parametrize("name", STRUCTS)
def test_every_byte_of_a_shared_struct_is_described(name):
    """A field added in C but not to rplb_layout would leave bytes no dtype
    field covers: the fields, by offset, must tile the struct.  (Shared
    structs name their padding, e.g. `reserved`; only the tail may be
    padded, to the struct's alignment.)"""
    dtype = contract.DTYPES[name]
    assert dtype.itemsize == dataplane.struct_sizes()[name]
    end = 0
    for offset, field in sorted((dtype.fields[f][1], f) for f in dtype.names):
        assert offset == end, f"{name}: bytes {end}..{offset} before {field} are not described"
        end = offset + dtype.fields[field][0].itemsize
    alignment = 64 if name == "rplb_lcore_counters" else 8     # __rte_cache_aligned
    assert dtype.itemsize == end or (dtype.itemsize % alignment == 0
                                     and dtype.itemsize - end < alignment), \
        f"{name}: bytes after {end} are not described"


def test_layout_entries_are_well_formed():
    for struct, field, offset, size, count, kind, ftype in dataplane.layout():
        assert struct in STRUCTS and field.isidentifier()
        assert count >= 1 and kind in "uis"
        assert (kind == "s") == (ftype is not None)
        if kind != "s":
            assert size in (1, 2, 4, 8)


def test_enum_names_are_complete_and_unique():
    names = dataplane.enum_names()
    counts = {"drops": "RPLB_DROP_REASONS", "events": "RPLB_EVENTS",
              "flow_states": "RPLB_FLOW_STATES", "sides": "RPLB_SIDES"}
    for group, constant in counts.items():
        values = names[group]
        assert len(values) == contract.CONSTANTS[constant]
        assert None not in values, f"a {group} name is missing in stats.c"
        assert len(set(values)) == len(values)
        assert all(v.isidentifier() for v in values)
    assert contract.SIDE_NAMES == ("frontend", "backend")
    assert contract.CONSTANTS["RPLB_FRONTEND"] == 0 and contract.CONSTANTS["RPLB_BACKEND"] == 1


def test_lcore_counters_have_the_enums_sizes():
    dtype = contract.DTYPES["rplb_lcore_counters"]
    assert dtype["drops"].shape == (len(contract.DROP_NAMES),)
    assert dtype["events"].shape == (len(contract.EVENT_NAMES),)
    assert dtype["port"].shape == (len(contract.SIDE_NAMES),)


def test_timeouts_are_the_flow_states():
    """Each flow state has its timeout, passed to C by state name (the
    order of enum rplb_flow_state is never written in Python)."""
    assert {f.name for f in dataclasses.fields(Timeouts)} == set(contract.FLOW_STATE_NAMES)
    timeouts = Timeouts(tcp=1, udp=2, tcp_syn=3, tcp_fin=4)
    as_tuple = dataplane._timeouts_tuple(timeouts)
    assert as_tuple == tuple(getattr(timeouts, n) for n in contract.FLOW_STATE_NAMES)
    assert dataplane._timeouts_tuple(dataclasses.asdict(timeouts)) == as_tuple


def test_counters_python_reads_exist_in_c():
    from rplb import balancer
    backend = contract.DTYPES["rplb_backend_counters"].names
    service = contract.DTYPES["rplb_service_counters"].names
    assert set(balancer._SLOT_TOTALS) | {"active_flows"} == set(backend)
    assert set(balancer._SERVICE_TOTALS) == set(service)
    assert contract.DTYPES["rplb_backend_counters"]["active_flows"].kind == "i"  # a gauge


def test_backend_id_encoding_is_the_c_one():
    bits = contract.BACKEND_SLOT_BITS
    assert contract.MAX_BACKENDS == 1 << bits
    assert contract.BACKEND_GENERATIONS == 1 << (32 - bits)
    for slot, generation in ((0, 0), (1, 0), (contract.MAX_BACKENDS - 1, 5),
                             (12345, contract.BACKEND_GENERATIONS - 1)):
        backend_id = contract.backend_id(slot, generation)
        assert backend_id < 1 << 32
        assert contract.backend_slot(backend_id) == slot
        assert contract.backend_generation(backend_id) == generation
    # Generations wrap: a slot's ids repeat after BACKEND_GENERATIONS reuses.
    assert contract.backend_id(7, contract.BACKEND_GENERATIONS) == contract.backend_id(7, 0)
    ids = np.array([contract.backend_id(s, 3) for s in range(0, 100000, 999)], np.uint32)
    assert contract.backend_slots(ids).tolist() == list(range(0, 100000, 999))


def test_limits_are_the_scale_rplb_promises():
    assert contract.MAX_SERVICES >= 10000
    assert contract.MAX_BACKENDS >= 100000
    # A flow record keeps the service id in 16 bits, UINT16_MAX meaning none.
    assert contract.MAX_SERVICES < 0xFFFF
    assert contract.DTYPES["rplb_flow_sample"]["service_id"].itemsize == 2


def test_config_reads_its_limits_from_c():
    from rplb import config
    assert config.MAX_SERVICES == contract.MAX_SERVICES
    assert config.MAX_BACKENDS == contract.MAX_BACKENDS
    assert config.MAX_TIMEOUT == contract.MAX_TIMEOUT
    assert config.MAX_WEIGHT == contract.MAX_WEIGHT
    assert config.MAX_MAGLEV_TABLE_SIZE == contract.MAGLEV_MAX_SIZE
    assert config.MIN_MAGLEV_TABLE_SIZE == contract.MAGLEV_MIN_SIZE
    assert config.MAX_FLOW_TABLE_SIZE == contract.MAX_FLOW_TABLE_SIZE
    assert config.MAX_FRAGMENT_DATAGRAMS == contract.MAX_FRAGMENT_DATAGRAMS
    assert config.MAX_FRAGMENT_HELD == contract.MAX_FRAGMENT_HELD
    assert config.MAX_FRAGMENT_TIMEOUT == contract.MAX_FRAGMENT_TIMEOUT
    defaults = config.Fragments()
    assert (defaults.datagrams, defaults.held, defaults.timeout) == contract.DEFAULT_FRAGMENTS


def test_importing_rplb_loads_neither_numpy_nor_the_extension():
    """rplb-dpdk blocks its signals before anything starts a thread (numpy's
    OpenBLAS does): the package and its configuration module stay light."""
    code = ("import sys, rplb, rplb.config, rplb.control, rplb.ctl; "
            "print('numpy' in sys.modules, 'rplb.dataplane' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False"]
