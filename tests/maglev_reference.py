"""Reference weighted Maglev table builder for the tests: plain Python, no numpy.

Written straight from the pseudocode of Eisenbud et al., "Maglev: A Fast and
Reliable Software Network Load Balancer" (NSDI'16), section 3.4, Figure 4,
with the weighting rule documented in rplb/maglev.py:

    offset_i = h1(i) mod M,  skip_i = h2(i) mod (M - 1) + 1
    permutation[i][j] = (offset_i + j * skip_i) mod M
    rounds r = 1, 2, ...: every backend i with weight > 0, in (ip, port) order,
        adds weight_i to credit_i; if credit_i >= max_weight it subtracts
        max_weight and takes one turn: walks its permutation from next_i to the
        first empty entry, takes it, and sets next_i past it.
    stop as soon as all M entries are taken.

Deliberately slow and obvious; rplb.maglev must produce exactly the same table.
"""

MASK64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15


def splitmix64_mix(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def hashes(ip, port):
    """(h1, h2): the first two outputs of SplitMix64 seeded with ip << 16 | port."""
    key = (ip << 16) | port
    h1 = splitmix64_mix((key + GAMMA) & MASK64)
    h2 = splitmix64_mix((key + 2 * GAMMA) & MASK64)
    return h1, h2


def hashes6(ip, port):
    """(h1, h2) of an IPv6 backend (ip: its 128-bit number): the address
    folded with the port into one 64-bit key, then as for IPv4."""
    hi, lo = ip >> 64, ip & MASK64
    key = splitmix64_mix(splitmix64_mix((hi + 3 * GAMMA) & MASK64) ^ lo) ^ port
    h1 = splitmix64_mix((key + GAMMA) & MASK64)
    h2 = splitmix64_mix((key + 2 * GAMMA) & MASK64)
    return h1, h2


def build_table(ips, ports, weights, size, family=4):
    """List of `size` caller indices (or -1 everywhere if no weight is > 0);
    family 6: ips are 128-bit integers."""
    ips = [int(ip) for ip in ips]
    backends = sorted(range(len(ips)), key=lambda i: (ips[i], ports[i]))
    backends = [i for i in backends if weights[i] > 0]
    entry = [-1] * size
    if not backends:
        return entry
    offset, skip = {}, {}
    for i in backends:
        h1, h2 = (hashes6 if family == 6 else hashes)(ips[i], ports[i])
        offset[i] = h1 % size
        skip[i] = h2 % (size - 1) + 1
    max_weight = max(weights[i] for i in backends)
    next_ = {i: 0 for i in backends}
    credit = {i: 0 for i in backends}
    filled = 0
    while True:
        for i in backends:
            credit[i] += weights[i]
            if credit[i] < max_weight:
                continue
            credit[i] -= max_weight
            c = (offset[i] + next_[i] * skip[i]) % size
            while entry[c] >= 0:
                next_[i] += 1
                c = (offset[i] + next_[i] * skip[i]) % size
            entry[c] = i
            next_[i] += 1
            filled += 1
            if filled == size:
                return entry
