"""What rplb's resources must hold: the arithmetic behind the refusals of
rplb-dpdk (too few mbufs, descriptor counts a port cannot take) and the
memory summary of ``rplb-dpdk --check-config``.

No DPDK import here: callers pass what they learned from the ports and the
C sizes (rplb.dataplane), so the rules can be read and tested alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

#: Per-lcore mempool cache rplb asks for (rte_pktmbuf_pool_create's
#: cache_size), capped at half the pool and at DPDK's maximum.
MEMPOOL_CACHE_SIZE = 256
RTE_MEMPOOL_CACHE_MAX_SIZE = 512
#: Largest descriptor count rplb accepts: the largest power of two a
#: uint16_t ring size can hold.
MAX_DESCRIPTORS = 32768


def mempool_cache_size(n_mbufs: int) -> int:
    """The per-lcore cache a pool of n_mbufs gets (rplb.dataplane.Mempool)."""
    return min(MEMPOOL_CACHE_SIZE, n_mbufs // 2, RTE_MEMPOOL_CACHE_MAX_SIZE)


def cache_flush_threshold(cache_size: int) -> int:
    """The most mbufs one lcore's mempool cache holds: DPDK lets a cache
    grow to 1.5 times its size before it flushes back to the pool."""
    return cache_size * 3 // 2


@dataclass(frozen=True)
class MbufNeed:
    """The mbufs that can be out of the pool at once, all in use at the
    same time in the worst case, so the pool must hold at least all of them:

    - every rx descriptor of every queue holds an mbuf waiting for a frame
      (ports x queues_per_port x rx_descriptors);
    - every tx descriptor may hold a sent mbuf the NIC has not freed yet
      (ports x queues_per_port x tx_descriptors);
    - each worker holds one rx burst in hand and a tx buffer per port it
      sends to (workers x burst x (1 + ports)), and with several workers
      that steer frames to each other, one more burst taken from the
      others' rings;
    - each worker's mempool cache keeps up to 1.5 x its size
      (workers x cache_flush_threshold(cache));
    - with several workers, every handoff ring (one per ordered pair of
      workers, workers x (workers - 1)) may be full: handoff_ring_size - 1
      mbufs each;
    - each worker of the load balancer may hold IPv4 fragments until their
      datagram's first fragment comes (workers x fragments_held, the
      services file's ``fragments.held``);
    - the appliance's own kernel interface (health_checks), whose queues
      hold mbufs as a port's do (kernel_queues x (2 x kernel_descriptors)),
      and each worker's buffer of frames for it (workers x burst).

    rplb runs one worker per lcore but the main one, each with a queue of
    its own on each port: queues_per_port is the worker count.
    """
    ports: int
    queues_per_port: int
    workers: int
    rx_descriptors: int
    tx_descriptors: int
    burst: int
    cache_size: int
    handoff_ring_size: int = 0      # 0: the workers do not steer (one worker)
    fragments_held: int = 0
    kernel_queues: int = 0
    kernel_descriptors: int = 0

    @property
    def rings(self) -> int:
        return (self.ports * self.queues_per_port * (self.rx_descriptors + self.tx_descriptors)
                + self.kernel_queues * 2 * self.kernel_descriptors)

    @property
    def handoff(self) -> int:
        if not self.handoff_ring_size:
            return 0
        return self.workers * (self.workers - 1) * (self.handoff_ring_size - 1)

    @property
    def bursts_per_worker(self) -> int:
        """The rx burst in hand, a tx buffer per port, with several workers
        one burst taken from the rings, with a kernel interface its buffer."""
        return (1 + self.ports + (1 if self.handoff_ring_size else 0)
                + (1 if self.kernel_queues else 0))

    @property
    def per_worker(self) -> int:
        return (self.burst * self.bursts_per_worker + cache_flush_threshold(self.cache_size)
                + self.fragments_held)

    @property
    def total(self) -> int:
        return self.rings + self.handoff + self.workers * self.per_worker

    def explain(self) -> str:
        handoff = (f"{self.workers * (self.workers - 1)} handoff rings x "
                   f"{self.handoff_ring_size - 1} + " if self.handoff_ring_size else "")
        held = (f" + {self.fragments_held} fragments held" if self.fragments_held else "")
        kernel = ""
        if self.kernel_queues:
            kernel = (f" + the kernel interface's {_plural(self.kernel_queues, 'queue')} x "
                      f"2 x {self.kernel_descriptors} descriptors")
        return (f"{self.ports} ports x {_plural(self.queues_per_port, 'queue')} x "
                f"({self.rx_descriptors} rx + {self.tx_descriptors} tx descriptors){kernel} "
                f"+ {handoff}{_plural(self.workers, 'worker')} x ({self.bursts_per_worker} "
                f"bursts of {self.burst} + {cache_flush_threshold(self.cache_size)} in its "
                f"mempool cache{held}) = {self.total}")


def mbufs_needed(n_mbufs: int, ports: int, queues_per_port: int, workers: int,
                 rx_descriptors: int, tx_descriptors: int, burst: int,
                 handoff_ring_size: int = 0, fragments_held: int = 0, kernel_queues: int = 0,
                 kernel_descriptors: int = 0) -> MbufNeed:
    """What a pool of n_mbufs must hold (its cache size depends on n_mbufs).
    handoff_ring_size: of the rings between workers that steer frames to
    each other (several workers of the load balancer), else 0;
    fragments_held: the fragments each worker may hold (0 without the load
    balancer); kernel_queues: of the appliance's own kernel interface, 0
    without one."""
    return MbufNeed(ports=ports, queues_per_port=queues_per_port, workers=workers,
                    rx_descriptors=rx_descriptors, tx_descriptors=tx_descriptors,
                    burst=burst, cache_size=mempool_cache_size(n_mbufs),
                    handoff_ring_size=handoff_ring_size if workers > 1 else 0,
                    fragments_held=fragments_held, kernel_queues=kernel_queues,
                    kernel_descriptors=kernel_descriptors)


#: The pool rplb-dpdk makes when --mbufs is not given, unless the rings and
#: bursts need more (default_mbufs).
DEFAULT_MBUFS = 16383


def default_mbufs(need_for) -> int:
    """The pool size when the operator gave none: DEFAULT_MBUFS, or, when
    the rings and bursts need more (many workers), the smallest 2^k - 1
    (a mempool's best size) that holds them.  need_for(n) is the MbufNeed
    of a pool of n mbufs."""
    n = DEFAULT_MBUFS
    while need_for(n).total > n:
        n = n * 2 + 1
    return n


def check_mbufs(n_mbufs: int, need: MbufNeed) -> Optional[str]:
    """None, or one line naming the limit."""
    if n_mbufs >= need.total:
        return None
    held = " or a lower fragments.held in the services file" if need.fragments_held else ""
    return (f"--mbufs {n_mbufs} is too few: the rings and bursts need {need.explain()}; "
            f"give --mbufs {need.total} or more (or fewer --descriptors{held})")


def check_descriptor_count(count: int) -> Optional[str]:
    """rplb's own rule, before any port is known: a power of two (what
    every PMD accepts, and what ring masks need) of at most MAX_DESCRIPTORS."""
    if count < 1 or count & (count - 1) or count > MAX_DESCRIPTORS:
        return (f"{count} is not a power of two between 1 and {MAX_DESCRIPTORS} "
                "(e.g. 512, 1024, 4096)")
    return None


def check_port_descriptors(rx_count: int, tx_count: int, limits: Dict[str, Dict[str, int]],
                           port: str) -> Optional[str]:
    """None, or one line naming the limit of the port (its rte_eth_desc_lim:
    {"rx"|"tx": {"min", "max", "align"}}) that a count breaks."""
    for direction, count in (("rx", rx_count), ("tx", tx_count)):
        lim = limits[direction]
        low, high, align = lim["min"], lim["max"], max(lim["align"], 1)
        if count < low or count > high or count % align:
            allowed = f"between {low} and {high}" + (f", a multiple of {align}"
                                                     if align > 1 else "")
            return (f"--descriptors {count}: {port} takes {allowed} {direction} "
                    "descriptors per queue (its rte_eth_dev_info desc_lim)")
    return None


@dataclass(frozen=True)
class MemoryEstimate:
    """Memory the load balancer's state takes (bytes), from the C sizes."""
    tables: int             # one generation of lookup tables, Maglev tables apart
    maglev: int             # the services' Maglev tables (generations share them)
    # One worker's IPv4 and IPv6 flow tables, fragment state, counters,
    # sample.  The IPv6 table holds flow_table_size / 4 flows (at least
    # 64; csrc/flow6_table.h: RPLB_FLOW6_FRACTION), about 108 bytes each.
    worker: int
    workers: int
    handoff: int = 0        # the rings between the workers (several workers)

    @property
    def peak(self) -> int:
        """While a change is published the old generation lives on until
        every worker moved on, and with it the old Maglev tables of the
        services the change rebuilt: at most two of each (a reload that
        changes every service).  What tables_memory_mb bounds, plus the
        workers' state and the rings between them."""
        return 2 * (self.tables + self.maglev) + self.workers * self.worker + self.handoff


def mebibytes(n_bytes: int) -> str:
    return f"{n_bytes / (1 << 20):.1f} MiB"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")
