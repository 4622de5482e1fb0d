"""rplb.maglev: weighted Maglev tables, checked against tests/maglev_reference.py."""

import hashlib
import ipaddress
import random

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import maglev_reference as reference
from rplb import maglev
from rplb.dataplane import maglev_fill

BIG = 65537


def ip(text):
    return int(ipaddress.IPv4Address(text))


def random_backends(rng, n, weights=None):
    """n distinct (ip, port) pairs, some sharing an IP, and weights incl. 0."""
    keys = rng.sample(range(1 << 20), n)
    ips = [ip("10.0.0.0") + (k >> 4) for k in keys]
    ports = [8000 + (k & 15) for k in keys]
    if weights is None:
        weights = [rng.choice([0, 1, 1, 2, 3, 5, 10, 100, 65535, rng.randint(0, 65535)])
                   for _ in range(n)]
    return ips, ports, weights


def owners(ips, ports, table):
    """The (ip, port) owning each slot (None where -1)."""
    return [None if i < 0 else (ips[i], ports[i]) for i in table.tolist()]


def check_same_as_reference(ips, ports, weights, size):
    table = maglev.build_table(ips, ports, weights, size)
    assert table.dtype == np.int32 and table.shape == (size,)
    assert table.tolist() == reference.build_table(ips, ports, weights, size)
    return table


# -- same tables as the plain loop

@pytest.mark.parametrize("size", [7, 13, 251, 4099])
def test_matches_reference_small_tables(size):
    rng = random.Random(size)
    for _ in range(40 if size < 4099 else 12):
        n = rng.randint(1, min(50, size))
        check_same_as_reference(*random_backends(rng, n), size)


@pytest.mark.parametrize("seed, n", [(1, 1), (2, 2), (3, 3), (4, 10), (5, 25), (6, 50)])
def test_matches_reference_65537(seed, n):
    rng = random.Random(seed)
    check_same_as_reference(*random_backends(rng, n), BIG)


def test_matches_reference_65537_equal_weights():
    rng = random.Random(7)
    check_same_as_reference(*random_backends(rng, 40, [7] * 40), BIG)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_matches_reference_hypothesis(data):
    size = data.draw(st.sampled_from([7, 13, 251, 1009]))
    n = data.draw(st.integers(1, min(50, size)))
    pairs = data.draw(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 65535)),
                               min_size=n, max_size=n, unique=True))
    weights = data.draw(st.lists(st.integers(0, 65535), min_size=n, max_size=n))
    check_same_as_reference([p[0] for p in pairs], [p[1] for p in pairs], weights, size)


# The fill is the C loop (csrc/maglev_fill.c); it refuses what it cannot fill.
@pytest.mark.parametrize("offset, skip, weight, size", [
    ([0], [1], [0], 13),            # weight 0 takes no turn: never fills
    ([13], [1], [1], 13),           # offset outside the table
    ([0], [0], [1], 13),            # skip 0 walks in place
    ([0], [13], [1], 13),           # skip >= size
    ([], [], [], 13),               # no backend
])
def test_c_fill_refuses_bad_input(offset, skip, weight, size):
    with pytest.raises(ValueError, match="maglev fill: invalid input"):
        maglev_fill(offset, skip, weight, size)


def test_c_fill_checks_lengths():
    with pytest.raises(ValueError, match="same length"):
        maglev_fill([0, 1], [1], [1, 1], 13)


def test_build_table_is_the_c_fill():
    """No second implementation: build_table's owners are the C fill's,
    mapped from the backends with weight > 0, in (ip, port) order."""
    rng = random.Random(5)
    ips, ports, weights = random_backends(rng, 20, [rng.randint(1, 9) for _ in range(20)])
    size = 251
    order = sorted(range(20), key=lambda i: (ips[i], ports[i]))
    h1, h2 = maglev.backend_hashes([ips[i] for i in order], [ports[i] for i in order])
    offset = (h1 % np.uint64(size)).astype(np.int64)
    skip = (h2 % np.uint64(size - 1)).astype(np.int64) + 1
    filled = maglev_fill(offset, skip, [weights[i] for i in order], size)
    assert maglev.build_table(ips, ports, weights, size).tolist() == \
        [order[i] for i in filled.tolist()]


# -- determinism

def test_order_does_not_matter():
    rng = random.Random(3)
    for size, n in ((13, 5), (251, 30), (BIG, 40)):
        ips, ports, weights = random_backends(rng, n)
        want = owners(ips, ports, maglev.build_table(ips, ports, weights, size))
        for _ in range(3):
            order = list(range(n))
            rng.shuffle(order)
            sips = [ips[i] for i in order]
            sports = [ports[i] for i in order]
            sweights = [weights[i] for i in order]
            table = maglev.build_table(sips, sports, sweights, size)
            assert owners(sips, sports, table) == want


def test_weight_zero_backends_change_nothing():
    rng = random.Random(4)
    ips, ports, weights = random_backends(rng, 20, [rng.randint(1, 50) for _ in range(20)])
    want = owners(ips, ports, maglev.build_table(ips, ports, weights, BIG))
    more_ips, more_ports, _ = random_backends(random.Random(5), 5)
    table = maglev.build_table(ips + more_ips, ports + more_ports, weights + [0] * 5, BIG)
    assert owners(ips + more_ips, ports + more_ports, table) == want


def test_accepts_numpy_arrays():
    ips, ports, weights = random_backends(random.Random(6), 10)
    want = maglev.build_table(ips, ports, weights, 251)
    got = maglev.build_table(np.array(ips, dtype=np.uint32), np.array(ports, dtype=np.uint16),
                             np.array(weights, dtype=np.int64), 251)
    assert got.tolist() == want.tolist()


GOLDEN_IPS = [ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")]
GOLDEN_PORTS = [80, 80, 8080]


def test_golden_hashes():
    # SplitMix64 seeded with 0 -- its published first two outputs.
    h1, h2 = maglev.backend_hashes([0], [0])
    assert h1.dtype == np.uint64 and h2.dtype == np.uint64
    assert (int(h1[0]), int(h2[0])) == (0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4)
    h1, h2 = maglev.backend_hashes(GOLDEN_IPS, GOLDEN_PORTS)
    assert [int(h) for h in h1] == [reference.hashes(i, p)[0]
                                    for i, p in zip(GOLDEN_IPS, GOLDEN_PORTS)]
    assert [int(h) for h in h2] == [reference.hashes(i, p)[1]
                                    for i, p in zip(GOLDEN_IPS, GOLDEN_PORTS)]
    assert (int(h1[0]), int(h2[0])) == (9653411949290311813, 2643977052720207607)


def test_golden_small_tables():
    assert maglev.build_table(GOLDEN_IPS, GOLDEN_PORTS, [1, 1, 1], 13).tolist() == \
        [0, 1, 2, 0, 1, 2, 0, 1, 0, 2, 0, 2, 1]
    assert maglev.build_table(GOLDEN_IPS, GOLDEN_PORTS, [3, 2, 1], 13).tolist() == \
        [0, 0, 2, 0, 1, 2, 0, 1, 0, 1, 0, 0, 1]


def test_golden_big_table():
    table = maglev.build_table(GOLDEN_IPS, GOLDEN_PORTS, [3, 2, 1], BIG)
    assert np.bincount(table).tolist() == [32769, 21846, 10922]
    assert hashlib.sha256(table.astype("<i4").tobytes()).hexdigest() == \
        "9f55e2b73ce875b3ac6fce5b68620c74f4845410e2e4c9c2cef38ff71d53dd18"


# -- weights

def test_shares_follow_weights():
    ips, ports, _ = random_backends(random.Random(8), 3)
    table = maglev.build_table(ips, ports, [10, 5, 1], BIG)
    shares = np.bincount(table, minlength=3) / BIG
    assert np.abs(shares - np.array([10, 5, 1]) / 16).max() <= 0.01


def test_shares_follow_weights_many_backends():
    rng = random.Random(9)
    weights = [rng.randint(1, 100) for _ in range(200)]
    ips, ports, _ = random_backends(rng, 200)
    table = maglev.build_table(ips, ports, weights, BIG)
    shares = np.bincount(table, minlength=200) / BIG
    assert np.abs(shares - np.array(weights) / sum(weights)).max() <= 0.01


def test_weight_zero_gets_nothing():
    ips, ports, _ = random_backends(random.Random(10), 4)
    table = maglev.build_table(ips, ports, [3, 0, 1, 0], BIG)
    counts = np.bincount(table, minlength=4)
    assert counts[1] == 0 and counts[3] == 0
    assert counts[0] + counts[2] == BIG and (table >= 0).all()


@pytest.mark.parametrize("size", [13, BIG])
def test_no_weight_means_no_backend(size):
    ips, ports, _ = random_backends(random.Random(12), 3)
    assert (maglev.build_table(ips, ports, [0, 0, 0], size) == -1).all()
    empty = maglev.build_table([], [], [], size)
    assert empty.dtype == np.int32 and empty.shape == (size,) and (empty == -1).all()


def test_single_backend_takes_everything():
    assert (maglev.build_table([ip("192.0.2.1")], [443], [1], 251) == 0).all()


# -- minimal disruption

def test_removing_a_backend_moves_little_else():
    ips, ports, weights = random_backends(random.Random(13), 10, [1] * 10)
    before = owners(ips, ports, maglev.build_table(ips, ports, weights, BIG))
    gone = (ips[4], ports[4])
    del ips[4], ports[4], weights[4]
    after = owners(ips, ports, maglev.build_table(ips, ports, weights, BIG))
    stayed = [a == b for a, b in zip(before, after) if a != gone]
    assert sum(stayed) / len(stayed) >= 0.95
    assert gone not in after


def test_adding_a_backend_moves_about_its_share():
    ips, ports, weights = random_backends(random.Random(14), 11, [1] * 11)
    before = owners(ips[:10], ports[:10], maglev.build_table(ips[:10], ports[:10],
                                                             weights[:10], BIG))
    after = owners(ips, ports, maglev.build_table(ips, ports, weights, BIG))
    changed = sum(a != b for a, b in zip(before, after)) / BIG
    assert 1 / 11 - 0.01 <= changed <= 0.12


# -- errors

@pytest.mark.parametrize("args, message", [
    (([1, 2], [80], [1, 1], 13), "same length"),
    (([1, 2], [80, 80], [1], 13), "same length"),
    (([ip("10.0.0.1"), ip("10.0.0.1")], [80, 80], [1, 2], 13),
     "duplicate backend 10.0.0.1:80"),
    (([1, 2], [80, 80], [1, -1], 13), r"weights\[1\] = -1 is out of range"),
    (([1, 2], [80, 80], [65536, 1], 13), r"weights\[0\] = 65536 is out of range"),
    (([1], [80], [1], 65536), "size 65536 is not prime"),
    (([1], [80], [1], 1), "size 1 is not prime"),
    (([1], [80], [1], 0), "size 0 is not prime"),
    (([1], [80], [1], -7), "size -7 is not prime"),
    (([1, 2, 3, 4], [80] * 4, [1] * 4, 3),
     r"size 3 is smaller than the number of backends \(4\)"),
    (([2**32], [80], [1], 13), r"ips\[0\] = 4294967296 is out of range"),
    (([-1], [80], [1], 13), r"ips\[0\] = -1 is out of range"),
    (([1], [65536], [1], 13), r"ports\[0\] = 65536 is out of range"),
    (([1], [80], [1], 2**31 + 11), "too large"),
])
def test_errors(args, message):
    with pytest.raises(ValueError, match=message):
        maglev.build_table(*args)


@pytest.mark.parametrize("args", [
    ([1], [80], [1.5], 13),
    ([1], [80], ["1"], 13),
    ([1], [80], [1], 13.0),
])
def test_type_errors(args):
    with pytest.raises(TypeError):
        maglev.build_table(*args)


def test_backend_hashes_checks_input():
    with pytest.raises(ValueError, match="same length"):
        maglev.backend_hashes([1, 2], [80])
    with pytest.raises(ValueError, match="out of range"):
        maglev.backend_hashes([1], [70000])
