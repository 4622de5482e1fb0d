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

    IPv6 backends (``family=6``): the address is 128 bits, too many for one
    key, so it is folded into one first.  With hi, lo the address's upper
    and lower 64 bits (the 16 bytes in network order, read as two
    big-endian halves):
    key = mix64(mix64((hi + 3 * 0x9E3779B97F4A7C15) mod 2**64) ^ lo) ^ port,
    then h1, h2 as above.  (A service's backends are all of one family, so
    IPv4 and IPv6 keys never meet; IPv4's hashes are unchanged.)

Permutations
    offset = h1 mod M, skip = h2 mod (M - 1) + 1,
    permutation[i][j] = (offset_i + j * skip_i) mod M   (M prime: a full cycle).

Fill (the sequential semantics, also in tests/maglev_reference.py)
    Backends with weight > 0 are ordered by (ip, port) (an IPv6 ip as its
    128-bit number).  Rounds r = 1, 2, ...:
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

#: The address families build_table takes.
FAMILIES = (4, 6)

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


def backend_hashes(ips, ports, family: int = 4) -> tuple:
    """The two 64-bit hashes (h1, h2) of each backend, as uint64 arrays.

    h1 seeds the permutation offset (h1 mod size), h2 its skip
    (h2 mod (size - 1) + 1).  Both are SplitMix64 outputs for the 48-bit key
    ip << 16 | port (IPv4), or for the IPv6 address folded with its port
    (family 6: ips are 128-bit integers or IPv6Address objects); see the
    module docstring for the exact function.  Raises ValueError or
    TypeError for values out of range or of the wrong type.
    """
    if family == 6:
        hi, lo, port = _ip6_ports(ips, ports)
        return _hashes(_key6(hi, lo, port))
    _check_family(family)
    ip, port = _ip_ports(ips, ports)
    return _hashes((ip.astype(np.uint64) << np.uint64(16)) | port.astype(np.uint64))


def _hashes(key: np.ndarray) -> tuple:
    h1 = _mix64(key + np.uint64(_GAMMA))
    h2 = _mix64(key + np.uint64((2 * _GAMMA) & _MASK64))
    return h1, h2


def _key6(hi: np.ndarray, lo: np.ndarray, port: np.ndarray) -> np.ndarray:
    """The 64-bit key of IPv6 backends (module docstring)."""
    folded = _mix64(_mix64(hi + np.uint64((3 * _GAMMA) & _MASK64)) ^ lo)
    return folded ^ port.astype(np.uint64)


def _check_family(family) -> None:
    if family not in FAMILIES:
        raise ValueError(f"family must be 4 or 6, not {family!r}")


def _ip6_ports(ips, ports):
    """IPv6 addresses (128-bit ints or IPv6Address) as (hi, lo) uint64
    arrays, and the ports."""
    if isinstance(ips, (str, bytes)):
        raise TypeError(f"ips must be a sequence of integers, not {type(ips).__name__}")
    numbers = []
    for i, value in enumerate(ips):
        try:
            number = operator.index(value) if not hasattr(value, "packed") else int(value)
        except TypeError:
            raise TypeError("ips must be integers or IPv6 addresses") from None
        if not 0 <= number < 1 << 128 or getattr(value, "version", 6) != 6:
            raise ValueError(f"ips[{i}] = {value} is out of range: IPv6 addresses are "
                             "0..2**128-1")
        numbers.append(number)
    port = _int_array(ports, "ports", 0, 65535, "ports are 0..65535")
    if len(numbers) != port.size:
        raise ValueError(f"ips and ports must have the same length "
                         f"(got {len(numbers)} and {port.size})")
    hi = np.array([n >> 64 for n in numbers], dtype=np.uint64)
    lo = np.array([n & _MASK64 for n in numbers], dtype=np.uint64)
    return hi, lo, port


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


def build_table(ips, ports, weights, size, family: int = 4) -> np.ndarray:
    """The weighted Maglev table: int32 array of `size` backend indices.

    ips: IPv4 addresses as host-order ints (family 4), or IPv6 addresses as
    128-bit ints or IPv6Address objects (family 6); ports: ints 0..65535; weights:
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
    _check_family(family)
    if family == 6:
        hi, lo, port = _ip6_ports(ips, ports)
    else:
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
    n = port.size
    if size < n:
        raise ValueError(f"size {size} is smaller than the number of backends ({n})")
    if family == 6:
        order = _order6(hi, lo, port)
        same = ((hi[order][1:] == hi[order][:-1]) & (lo[order][1:] == lo[order][:-1])
                & (port[order][1:] == port[order][:-1]))
        dup = np.flatnonzero(same)
        if dup.size:
            import ipaddress
            i = int(order[dup[0]])
            address = ipaddress.IPv6Address(int(hi[i]) << 64 | int(lo[i]))
            raise ValueError(f"duplicate backend [{address}]:{int(port[i])}")
        return _build6(hi, lo, port, weight, size, order)

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


def build_table6_unchecked(hi: np.ndarray, lo: np.ndarray, port: np.ndarray,
                           weight: np.ndarray, size: int) -> np.ndarray:
    """build_table_unchecked for IPv6 backends, given as the upper and
    lower 64 bits of each address (uint64 arrays) and int64 ports and
    weights."""
    return _build6(hi, lo, port, weight, size, _order6(hi, lo, port))


def _order6(hi, lo, port) -> np.ndarray:
    """Caller indices in (ip, port) order, the 128-bit ip as (hi, lo)."""
    return np.lexsort((port, lo, hi))


def _build6(hi, lo, port, weight, size, order) -> np.ndarray:
    active = order[weight[order] > 0]
    if active.size == 0:
        return np.full(size, -1, dtype=np.int32)
    return _fill(active, _hashes(_key6(hi[active], lo[active], port[active])), weight, size)


def _build(ip, port, weight, size, order) -> np.ndarray:
    active = order[weight[order] > 0]  # caller indices, (ip, port) order
    if active.size == 0:
        return np.full(size, -1, dtype=np.int32)
    return _fill(active, backend_hashes(ip[active], port[active]), weight, size)


def _fill(active, hashes, weight, size) -> np.ndarray:
    h1, h2 = hashes
    offset = (h1 % np.uint64(size)).astype(np.int64)
    skip = (h2 % np.uint64(size - 1)).astype(np.int64) + 1
    from rplb.dataplane import maglev_fill
    owner = maglev_fill(offset, skip, weight[active], size)
    return active.astype(np.int32)[owner]
