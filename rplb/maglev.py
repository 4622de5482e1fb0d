"""Weighted Maglev lookup tables (no EAL needed).

Maglev consistent hashing as in Eisenbud et al., "Maglev: A Fast and
Reliable Software Network Load Balancer" (NSDI'16), section 3.4, extended
with weights.  The table has a prime number M of entries; entry = index (into
the caller's lists) of the backend that owns it.

Hashes (:func:`backend_hashes`)
    key = ip << 16 | port (ip: IPv4 as host-order uint32), a 48-bit integer.
    h1, h2 = the first two outputs of SplitMix64 seeded with key, i.e.
    h_s = mix64((key + s * 0x9E3779B97F4A7C15) mod 2**64) for s = 1, 2, where
    mix64(z): z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9;
              z = (z ^ z >> 27) * 0x94D049BB133111EB;
              return z ^ z >> 31            (all mod 2**64)
    Pure integer arithmetic: the same on every machine and in every process.

Permutations
    offset = h1 mod M, skip = h2 mod (M - 1) + 1,
    permutation[i][j] = (offset_i + j * skip_i) mod M   (M prime: a full cycle).

Fill (the sequential semantics, also in tests/maglev_reference.py)
    Backends with weight > 0 are ordered by (ip, port).  Rounds r = 1, 2, ...:
    in each round every backend, in that order, adds its weight to its credit
    (initially 0); when the credit reaches max_weight it subtracts max_weight
    and takes one turn -- walks its permutation from next_i to the first empty
    entry, takes it and sets next_i just past it.  So backends with the
    maximum weight take a turn every round, and backend i takes its k-th turn
    in round ceil(k * max_weight / weight_i).  Stop when all M entries are
    taken.  Each turn takes one entry, so a backend's share is its share of the
    turns, proportional to its weight (the last, partial round aside).

Since the result depends only on the set of (ip, port, weight) triples, the
table is the same whatever order the backends are given in, and a backend of
weight 0 changes nothing.

Implementation: the hashes and permutations are numpy; the fill is the
plain sequential loop in C (csrc/maglev_fill.c, through rplb.dataplane),
which tests/test_maglev.py checks against the pure-Python reference in
tests/maglev_reference.py.
"""

from functools import lru_cache
import operator

import numpy as np

from rplb import contract

__all__ = ["MAX_WEIGHT", "backend_hashes", "build_table"]

MAX_WEIGHT = contract.MAX_WEIGHT
MAX_SIZE = 2**31 - 1  # entries are int32

_GAMMA = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_MASK64 = 2**64 - 1



def _mix64(z: np.ndarray) -> np.ndarray:
    """The SplitMix64 output function on a uint64 array (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
    return z ^ (z >> np.uint64(31))


def _int_array(values, name: str, low: int, high: int, what: str) -> np.ndarray:
    """values as an int64 array, each checked to lie in low..high."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of integers, not {type(values).__name__}")
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a flat sequence of integers")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind == "O":  # Python ints too big for int64, or non-numbers
        try:
            items = [operator.index(v) for v in arr]
        except TypeError:
            raise TypeError(f"{name} must be integers") from None
        for i, v in enumerate(items):
            if not low <= v <= high:
                raise ValueError(f"{name}[{i}] = {v} is out of range: {what}")
        return np.array(items, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integers, not {arr.dtype}")
    bad = np.flatnonzero((arr < low) | (arr > high))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name}[{i}] = {int(arr[i])} is out of range: {what}")
    return arr.astype(np.int64, copy=False)


def _ip_ports(ips, ports):
    ip = _int_array(ips, "ips", 0, 2**32 - 1, "IPv4 addresses are 0..4294967295")
    port = _int_array(ports, "ports", 0, 65535, "ports are 0..65535")
    if ip.size != port.size:
        raise ValueError(f"ips and ports must have the same length "
                         f"(got {ip.size} and {port.size})")
    return ip, port


def backend_hashes(ips, ports) -> tuple:
    """The two 64-bit hashes (h1, h2) of each backend, as uint64 arrays.

    h1 seeds the permutation offset (h1 mod size), h2 its skip
    (h2 mod (size - 1) + 1).  Both are SplitMix64 outputs for the 48-bit key
    ip << 16 | port; see the module docstring for the exact function.
    """
    ip, port = _ip_ports(ips, ports)
    key = (ip.astype(np.uint64) << np.uint64(16)) | port.astype(np.uint64)
    h1 = _mix64(key + np.uint64(_GAMMA))
    h2 = _mix64(key + np.uint64((2 * _GAMMA) & _MASK64))
    return h1, h2


@lru_cache(maxsize=64)
def _is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin (exact for n < 3.3e24)."""
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    for p in small:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for a in small:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _ip_text(ip: int) -> str:
    return ".".join(str((ip >> s) & 255) for s in (24, 16, 8, 0))


def build_table(ips, ports, weights, size) -> np.ndarray:
    """The weighted Maglev table: int32 array of `size` backend indices.

    ips: IPv4 addresses as host-order ints; ports: ints 0..65535; weights:
    ints 0..65535; size: a prime >= len(ips).  Entry j is the index, into the
    caller's lists, of the backend owning slot j; if no backend has a weight
    above 0 every entry is -1.  The table depends only on the set of backends,
    not on the order they are given in.  Raises ValueError for mismatched
    lengths, values out of range, a duplicate (ip, port), or a bad size.
    """
    lengths = [len(ips), len(ports), len(weights)]
    if len(set(lengths)) != 1:
        raise ValueError("ips, ports and weights must have the same length "
                         f"(got {lengths[0]}, {lengths[1]} and {lengths[2]})")
    ip, port = _ip_ports(ips, ports)
    weight = _int_array(weights, "weights", 0, MAX_WEIGHT, f"weights are 0..{MAX_WEIGHT}")
    try:
        size = operator.index(size)
    except TypeError:
        raise TypeError(f"size must be an integer, not {type(size).__name__}") from None
    if size > MAX_SIZE:
        raise ValueError(f"size {size} is too large (at most {MAX_SIZE})")
    if not _is_prime(size):
        raise ValueError(f"size {size} is not prime (the Maglev permutation needs "
                         "a prime table size)")
    n = ip.size
    if size < n:
        raise ValueError(f"size {size} is smaller than the number of backends ({n})")

    key = (ip << 16) | port
    order = np.argsort(key, kind="stable")  # caller index by (ip, port)
    skey = key[order]
    dup = np.flatnonzero(skey[1:] == skey[:-1])
    if dup.size:
        k = int(skey[dup[0]])
        raise ValueError(f"duplicate backend {_ip_text(k >> 16)}:{k & 0xFFFF}")
    return _build(ip, port, weight, size, order)


def build_table_unchecked(ip: np.ndarray, port: np.ndarray, weight: np.ndarray,
                          size: int) -> np.ndarray:
    """build_table for backends already validated (a service of a valid
    Config: distinct (ip, port), values in range, size prime and large
    enough), as int64 arrays: the per-service cost of a large reload,
    without the checks."""
    return _build(ip, port, weight, size, np.argsort((ip << 16) | port, kind="stable"))


def _build(ip, port, weight, size, order) -> np.ndarray:
    active = order[weight[order] > 0]  # caller indices, (ip, port) order
    if active.size == 0:
        return np.full(size, -1, dtype=np.int32)
    h1, h2 = backend_hashes(ip[active], port[active])
    offset = (h1 % np.uint64(size)).astype(np.int64)
    skip = (h2 % np.uint64(size - 1)).astype(np.int64) + 1
    from rplb.dataplane import maglev_fill
    owner = maglev_fill(offset, skip, weight[active], size)
    return active.astype(np.int32)[owner]
