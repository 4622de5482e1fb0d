"""Weighted Maglev lookup tables (numpy only, no DPDK).

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

Implementation: the fill follows those sequential semantics exactly, but
vectorised: turns are processed in batches of rounds, each solved as a fixed
point over candidate lists (see the comments at _fill), and the last few
turns, when permutation walks get long, run one by one against each
backend's free entries found directly (_tail).  tests/maglev_reference.py is
the plain loop; the tests check that both give the same tables.
"""

from functools import lru_cache
import operator

import numpy as np

__all__ = ["MAX_WEIGHT", "backend_hashes", "build_table"]

MAX_WEIGHT = 65535
MAX_SIZE = 2**31 - 1  # entries are int32

_GAMMA = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_MASK64 = 2**64 - 1

# Batch sizing and iteration cap (see _fill).
_BATCH_FRACTION = 0.25
_MAX_SWEEPS = 100
_SLACK_SD = 2.0
_SLACK_ADD = 2.0
_SPAN_STEPS = 4  # candidate spans are rounded up to powers of 2 ** (1 / 4)
_TAIL_MAX = 2048  # see _tail_pays
_TAIL_RATIO = 1.5
_INF = np.iinfo(np.int64).max


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

    active = order[weight[order] > 0]  # caller indices, (ip, port) order
    if active.size == 0:
        return np.full(size, -1, dtype=np.int32)
    h1, h2 = backend_hashes(ip[active], port[active])
    offset = (h1 % np.uint64(size)).astype(np.int64)
    skip = (h2 % np.uint64(size - 1)).astype(np.int64) + 1
    owner = _fill_native(offset, skip, weight[active], size)
    if owner is None:
        owner = _fill(offset, skip, weight[active], size)
    return active.astype(np.int32)[owner]


def _fill_native(offset, skip, weight, size):
    """The same fill in C when the compiled extension is there (about 20x
    faster); None otherwise, and numpy does it."""
    try:
        from rplb.dataplane import maglev_fill
    except ImportError:
        return None
    return maglev_fill(offset, skip, weight, size)


# -- the fill
#
# Turn t of the sequential loop is the k-th turn of backend b, in round
# r = ceil(k * max_weight / weight_b); its "time" r * n + b orders all turns.
#
# Batches.  A batch is the time range of turns from the earliest one not yet
# done to the end of a round chosen so that the batch holds about
# free * _BATCH_FRACTION turns (the last one is cut at exactly `free` turns).
# Each backend of the batch gets a candidate list: its next free entries, in
# permutation order, from its position next_b.  The sequential result is then
# a fixed point: with skipped[i] saying candidate i of backend b is passed
# over, u_i = i - (skips before i) is the turn of b that looks at candidate i,
# which claims it unless skipped, and
#     skipped[i]  <=>  a turn of another backend with an earlier time
#                      claims the same entry.
# Taking turns in time order shows that exactly one fixed point exists and
# that it is the sequential result.  Jacobi iteration (all flags recomputed
# from the previous ones, from "nothing skipped") reaches it: only candidates
# whose entry is also on another backend's list can ever be skipped, so it
# runs on those alone.  A backend whose list runs out gets a longer one and
# the iteration goes on.  If it has not settled after _MAX_SWEEPS sweeps, the
# turns before the earliest candidate still changing are right already (the
# flags they depend on are a fixed point of the batch cut there); those are
# committed and the next batch starts after them.  The earliest turn of a
# batch is always right, so every batch makes progress.
#
# Tail.  Walking permutations gets slow as the table fills (the last turn
# walks about `size` positions).  The last turns are run one by one instead
# (_tail), with each backend's free entries found directly by their positions
# in its permutation.


def _fill(offset, skip, weight, size):
    """The sequential fill; returns int32 indices into offset/skip/weight."""
    n = weight.size
    entry = np.full(size, -1, dtype=np.int32)
    max_weight = int(weight.max())
    per_round = float(weight.sum()) / max_weight  # turns per round
    next_ = np.zeros(n, dtype=np.int64)           # permutation position
    taken = np.zeros(n, dtype=np.int64)           # turns done
    min_time = np.full(size, _INF, dtype=np.int64)  # scratch, kept all _INF
    ids = np.arange(n, dtype=np.int64)
    free = size

    def schedule(target, least):
        """The next turns, about `target` of them but at least `least`.

        Returns the count per backend, and the backend and time of each turn
        (grouped by backend, in time order), cut at `free` turns.
        """
        first_round = int((((taken + 1) * max_weight + weight - 1) // weight).min())
        rounds = max(1, round(target / per_round))
        while True:
            turns = ((first_round - 1 + rounds) * weight) // max_weight - taken
            total = int(turns.sum())
            if total >= least:
                break
            rounds = max(rounds + 1, int((least - total) / per_round + rounds))
        tback = np.repeat(ids, turns)
        tk = taken[tback] + 1 + (np.arange(total) - (np.cumsum(turns) - turns)[tback])
        tw = weight[tback]
        ttime = (tk * max_weight + tw - 1) // tw * n + tback
        if total > free:
            keep = ttime <= np.partition(ttime, free - 1)[free - 1]
            tback, ttime = tback[keep], ttime[keep]
            turns = np.bincount(tback, minlength=n)
        return turns, tback, ttime

    while free and not _tail_pays(free, n, size):
        turns, _, ttime = schedule(free * _BATCH_FRACTION, 1)
        back, pos, slot = _batch(entry, offset, skip, next_, turns, ttime, free, size,
                                 per_round, min_time)
        entry[slot] = back
        if back.size:
            last = np.flatnonzero(np.append(back[1:] != back[:-1], True))
            next_[back[last]] = pos[last] + 1
        taken += np.bincount(back, minlength=n)
        free -= back.size
    if free:
        _, tback, ttime = schedule(free, free)
        _tail(entry, offset, skip, tback[np.argsort(ttime)], size)
    return entry


def _batch(entry, offset, skip, next_, turns, ttime, free, size, per_round, min_time):
    """Run one batch; the (backend, position, slot) of each turn to commit.

    turns: count per backend; ttime: the time of each turn, grouped by
    backend.  The result is grouped by backend, positions increasing.
    """
    n = turns.size
    total = ttime.size
    tfirst = np.cumsum(turns) - turns
    want = np.flatnonzero(turns)
    # Permutation positions to scan.  A turn with r turns of the batch before
    # it looks at about free / (free - r) of the entries free now (the others
    # are taken by then); r is estimated from its round and (ip, port) rank.
    # Plus some slack.
    rounds = ttime // n
    before = (rounds - rounds.min() + (ttime - rounds * n) / n) * per_round
    looks = free / np.maximum(free - np.minimum(before, total - 1), 1.0)
    need = np.bincount(np.repeat(np.arange(n), turns), looks, minlength=n)[want]
    width = np.zeros(n, dtype=np.int64)
    width[want] = _round_width((need + _SLACK_SD * np.sqrt(need) + _SLACK_ADD) * (size / free))
    back, pos, slot = _lists(entry, offset, skip, next_, want, width, size)
    skipped = np.zeros(back.size, dtype=bool)

    while True:
        # index of each candidate in its backend's list
        start = np.flatnonzero(np.concatenate(([True], back[1:] != back[:-1])))
        first = np.repeat(start, np.diff(np.append(start, back.size)))
        local = np.arange(back.size) - first
        limit, skipped = _settle(back, slot, first, local, skipped, turns, tfirst, ttime,
                                 size, min_time)
        done = np.cumsum(skipped) - skipped
        u = local - (done - done[first])  # the turn that looks at each candidate
        claim = (u < turns[back]) & ~skipped
        got = np.bincount(back[claim], minlength=n)
        lack = np.flatnonzero(got < turns)
        if not lack.size:
            break
        if limit != _INF:  # unsettled: commit only what comes before both
            limit = min(limit, int(ttime[tfirst[lack] + got[lack]].min()))
            break
        # Lists ran out: longer ones (starting with the same entries), and on.
        width[lack] = _round_width(2.0 * width[lack])
        keep = ~np.isin(back, lack)
        more = _lists(entry, offset, skip, next_, lack, width, size)
        back, pos, slot = (np.concatenate((a[keep], b)) for a, b in zip((back, pos, slot), more))
        skipped = np.concatenate((skipped[keep], np.zeros(more[0].size, dtype=bool)))

    if limit != _INF:
        claim[claim] = ttime[tfirst[back[claim]] + u[claim]] < limit
    return back[claim], pos[claim], slot[claim]


def _round_width(span):
    """Spans rounded up to powers of 2 ** (1 / _SPAN_STEPS), at least 4."""
    level = np.ceil(np.log2(np.maximum(span, 4.0)) * _SPAN_STEPS)
    return np.ceil(np.exp2(level / _SPAN_STEPS)).astype(np.int64)


def _lists(entry, offset, skip, next_, backs, width, size):
    """The free entries among positions next_[b] .. next_[b] + width[b] - 1.

    (backend, position, slot) arrays, grouped by backend, positions
    increasing; positions past the end of a permutation are left out.
    """
    widths = width[backs]
    levels = np.unique(widths)  # one 2-D block per width
    parts = []
    for w in levels.tolist():
        group = backs[widths == w] if levels.size > 1 else backs
        gnext, gskip = next_[group], skip[group]
        slots = (((offset[group] + gnext * gskip) % size)[:, None]
                 + np.arange(w) * gskip[:, None]) % size
        free = entry[slots] < 0
        if (gnext + w > size).any():
            free &= np.arange(w) < (size - gnext)[:, None]
        flat = np.flatnonzero(free)
        row = flat // w
        parts.append((group[row], gnext[row] + (flat - row * w), slots.ravel()[flat]))
    if len(parts) == 1:
        return parts[0]
    return tuple(np.concatenate(a) for a in zip(*parts))


def _settle(back, slot, first, local, skipped, turns, tfirst, ttime, size, min_time):
    """Jacobi sweeps from `skipped`; returns (limit, flags).

    limit is _INF if the flags settled, else the time before which the turns
    are right.
    """
    # Only candidates whose entry is on another list can be skipped; and a
    # candidate with `turns` never-skipped ones before it is never looked at.
    shared = np.bincount(slot, minlength=size)[slot] > 1
    alone = np.cumsum(~shared)
    alone -= alone[first] - (~shared)[first]  # inclusive count within the list
    reach = alone - ~shared < turns[back]
    dup = np.flatnonzero(reach & (np.bincount(slot[reach], minlength=size)[slot] > 1))
    if not dup.size:
        return _INF, np.zeros(back.size, dtype=bool)
    d_back, d_slot, d_local = back[dup], slot[dup], local[dup]
    d_turns, d_tfirst = turns[d_back], tfirst[d_back]
    d_start = np.flatnonzero(np.concatenate(([True], d_back[1:] != d_back[:-1])))
    d_first = np.repeat(d_start, np.diff(np.append(d_start, dup.size)))
    flags = skipped[dup]
    limit = _INF
    for sweep in range(_MAX_SWEEPS + 1):
        done = np.cumsum(flags) - flags
        u = d_local - (done - done[d_first])  # the turn that looks at it
        valid = u < d_turns
        time = np.where(valid, ttime[d_tfirst + np.minimum(u, d_turns - 1)], _INF)
        claim = valid & ~flags
        claimed = d_slot[claim]
        np.minimum.at(min_time, claimed, time[claim])
        again = valid & (min_time[d_slot] < time)
        min_time[claimed] = _INF
        changed = again != flags
        if not changed.any():
            break
        if sweep == _MAX_SWEEPS:  # keep `flags`: right before `limit`
            limit = int(time[changed].min())
            break
        flags = again
    out = np.zeros(back.size, dtype=bool)
    out[dup] = flags
    return limit, out


def _tail_pays(free, n, size):
    """Whether to finish with _tail: its cost against walking permutations.

    Walking to the end costs about size * ln(free) probes (the last turns
    walk far); _tail computes backends x free positions, then runs the
    remaining turns one by one in Python.
    """
    return free <= _TAIL_MAX and min(n, free) * free <= _TAIL_RATIO * size * np.log(free + 1)


def _tail(entry, offset, skip, order, size):
    """The last turns (backends `order`, in time order), when few entries are left.

    Each backend's free entries are found directly, by their positions in its
    permutation (position = (slot - offset) / skip mod size), and the turns
    run one by one: a turn takes its backend's free entry with the lowest
    position that no earlier turn took.
    """
    free = np.flatnonzero(entry < 0)
    users, which = np.unique(order, return_inverse=True)
    inverse = np.array([pow(int(s), -1, size) for s in skip[users]], dtype=np.int64)
    position = (free[None, :] - offset[users][:, None]) % size * inverse[:, None] % size
    bits = max(int(free.size - 1).bit_length(), 1)
    mask = (1 << bits) - 1
    keyed = (position << bits) | np.arange(free.size)  # sorts by position
    # Most backends need only the start of their list: sort the whole list
    # only for those that get that far.
    k = min(free.size, 2 * int(np.bincount(which).max()) + 16)
    if k < free.size:
        ranked = np.partition(keyed, k - 1, axis=1)[:, :k]
        ranked.sort(axis=1)
    else:
        ranked = np.sort(keyed, axis=1)
    ranked = (ranked & mask).tolist()  # free-entry indices, in walk order
    at = [0] * users.size
    taken = bytearray(free.size)
    owner = [0] * free.size
    for u in which.tolist():
        row, i = ranked[u], at[u]
        while True:
            if i == len(row):
                row = ranked[u] = (np.sort(keyed[u]) & mask).tolist()
            if not taken[row[i]]:
                break
            i += 1
        f = row[i]
        taken[f] = 1
        owner[f] = u
        at[u] = i + 1
    entry[free] = users[owner]
