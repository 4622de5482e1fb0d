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
      sends to (workers x burst x (1 + ports));
    - each worker's mempool cache keeps up to 1.5 x its size
      (workers x cache_flush_threshold(cache));
    - each worker of the load balancer may hold IPv4 fragments until their
      datagram's first fragment comes (workers x fragments_held, the
      services file's ``fragments.held``);
    - the appliance's own kernel interface (health_checks), whose queues
      hold mbufs as a port's do (kernel_queues x (2 x kernel_descriptors)),
      and each worker's buffer of frames for it (workers x burst).

    Today rplb runs one worker with one queue per port; with several
    workers per port, queues_per_port grows with them.
    """
    ports: int
    queues_per_port: int
    workers: int
    rx_descriptors: int
    tx_descriptors: int
    burst: int
    cache_size: int
    fragments_held: int = 0
    kernel_queues: int = 0
    kernel_descriptors: int = 0

    @property
    def rings(self) -> int:
        return (self.ports * self.queues_per_port * (self.rx_descriptors + self.tx_descriptors)
                + self.kernel_queues * 2 * self.kernel_descriptors)

    @property
    def per_worker(self) -> int:
        kernel_buffer = self.burst if self.kernel_queues else 0
        return (self.burst * (1 + self.ports) + kernel_buffer
                + cache_flush_threshold(self.cache_size) + self.fragments_held)

    @property
    def total(self) -> int:
        return self.rings + self.workers * self.per_worker

    def explain(self) -> str:
        held = (f" + {self.fragments_held} fragments held" if self.fragments_held else "")
        kernel = ""
        if self.kernel_queues:
            kernel = (f" + the kernel interface's {_plural(self.kernel_queues, 'queue')} x "
                      f"2 x {self.kernel_descriptors} descriptors")
        bursts = 1 + self.ports + (1 if self.kernel_queues else 0)
        return (f"{self.ports} ports x {_plural(self.queues_per_port, 'queue')} x "
                f"({self.rx_descriptors} rx + {self.tx_descriptors} tx descriptors){kernel} "
                f"+ {_plural(self.workers, 'worker')} x ({bursts} bursts of "
                f"{self.burst} + {cache_flush_threshold(self.cache_size)} in its mempool "
                f"cache{held}) = {self.total}")


def mbufs_needed(n_mbufs: int, ports: int, queues_per_port: int, workers: int,
                 rx_descriptors: int, tx_descriptors: int, burst: int,
                 fragments_held: int = 0, kernel_queues: int = 0,
                 kernel_descriptors: int = 0) -> MbufNeed:
    """What a pool of n_mbufs must hold (its cache size depends on n_mbufs);
    fragments_held: the fragments each worker may hold (0 without the load
    balancer); kernel_queues: of the appliance's own kernel interface, 0
    without one."""
    return MbufNeed(ports=ports, queues_per_port=queues_per_port, workers=workers,
                    rx_descriptors=rx_descriptors, tx_descriptors=tx_descriptors,
                    burst=burst, cache_size=mempool_cache_size(n_mbufs),
                    fragments_held=fragments_held, kernel_queues=kernel_queues,
                    kernel_descriptors=kernel_descriptors)


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
    worker: int             # one worker's flow table, counters, sample
    workers: int

    @property
    def peak(self) -> int:
        """While a change is published the old generation lives on until
        every worker moved on, and with it the old Maglev tables of the
        services the change rebuilt: at most two of each (a reload that
        changes every service).  What tables_memory_mb bounds, plus the
        workers' state."""
        return 2 * (self.tables + self.maglev) + self.workers * self.worker


def mebibytes(n_bytes: int) -> str:
    return f"{n_bytes / (1 << 20):.1f} MiB"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")
