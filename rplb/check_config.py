"""``rplb-dpdk --check-config FILE``: validate a services file and say what
it will cost, without starting DPDK (after ``nginx -t`` and ``haproxy -c``).

The memory figures come from the C side's own arithmetic
(rplb.contract.tables_memory / maglev_memory, rplb.dataplane.worker_memory:
the sizes its allocations use), so they cannot drift from what rplb-dpdk
will allocate.
"""

from __future__ import annotations

from typing import List, Optional

from rplb import sizing
from rplb.config import Config


def memory_estimate(config: Config, workers: int) -> sizing.MemoryEstimate:
    from rplb import contract, dataplane
    return sizing.MemoryEstimate(
        tables=contract.tables_memory(len(config.services), config.backend_count),
        maglev=config.maglev_memory(),
        worker=dataplane.worker_memory(config.flow_table_size, config.fragments),
        workers=workers, handoff=dataplane.handoff_memory(workers))


def mbuf_need(config: Config, mbufs: int, descriptors: int, workers: int = 1) -> sizing.MbufNeed:
    """What the pool must hold for this configuration with this many
    workers (one queue pair each on both ports, and on the kernel interface
    of health checks; rings between them when there are several; the
    fragments each may hold)."""
    from rplb import contract, dataplane
    from rplb.kernel_interface import DESCRIPTORS
    kernel_queues = workers if config.health_checks is not None else 0
    return sizing.mbufs_needed(mbufs, ports=2, queues_per_port=workers, workers=workers,
                               rx_descriptors=descriptors, tx_descriptors=descriptors,
                               burst=contract.BURST,
                               handoff_ring_size=dataplane.handoff_ring_size(workers),
                               fragments_held=config.fragments.held,
                               kernel_queues=kernel_queues, kernel_descriptors=DESCRIPTORS)


def pool_size(config: Config, mbufs: Optional[int], workers: int, descriptors: int) -> int:
    """--mbufs, or the default pool for this configuration and workers."""
    if mbufs is not None:
        return mbufs
    return sizing.default_mbufs(lambda n: mbuf_need(config, n, descriptors, workers))


def empty_warning(path: str) -> str:
    return (f"warning: {path} has no service: every frame passes through unchanged "
            "(add services, then SIGHUP, `rplbctl reload` or `systemctl reload rplb`)")


def summary(path: str, config: Config, mbufs: Optional[int], descriptors: int,
            workers: int = 1) -> List[str]:
    """The lines --check-config prints for a valid file, for this many
    workers (rplb.lcores.worker_count of the EAL options)."""
    from rplb import dataplane
    backends = [b for service in config.services for b in service.backends]
    active = sum(1 for b in backends if b.weight > 0)
    lines = [f"{path}: valid: {_plural(len(config.services), 'service')}, "
             f"{_plural(len(backends), 'backend')} ({active} with weight > 0)"]
    width = max((len(s.label) for s in config.services), default=0)
    for service in config.services:
        weights = sum(b.weight for b in service.backends)
        check = ""
        if service.health is not None:
            health = service.health
            check = (f", {health.type} check every {health.interval:g} s "
                     f"(rise {health.rise}, fall {health.fall})")
        lines.append(f"  {service.label:<{width}}  {str(service.key):<22} "
                     f"{_plural(len(service.backends), 'backend')}, total weight {weights}, "
                     f"Maglev {config.maglev_size(service)}{check}")
    if config.health_checks is not None:
        settings = config.health_checks
        checked = sum(len(s.backends) for s in config.services if s.health is not None)
        lines.append(f"  health checks: from {settings.source} on interface "
                     f"{settings.interface} (made at start), {_plural(checked, 'backend')} "
                     f"checked; at most {settings.kernel_rate} frames/s per worker to it")
    memory = memory_estimate(config, workers)
    lines.append(f"  lookup tables: {sizing.mebibytes(memory.tables)} and Maglev tables "
                 f"{sizing.mebibytes(memory.maglev)}; at most "
                 f"{sizing.mebibytes(2 * (memory.tables + memory.maglev))} while a change is "
                 f"applied (tables_memory_mb {config.tables_memory_mb})")
    lines.append(f"  flow table: {sizing.mebibytes(memory.worker)} per worker lcore "
                 f"({config.flow_table_size} flows, {config.fragments.datagrams} fragmented "
                 f"datagrams, counters included) x {_plural(memory.workers, 'worker')}")
    if memory.handoff:
        lines.append(f"  handoff rings between the workers: {sizing.mebibytes(memory.handoff)} "
                     f"({workers * (workers - 1)} rings of "
                     f"{dataplane.handoff_ring_size(workers)} entries)")
    pool = pool_size(config, mbufs, workers, descriptors)
    need = mbuf_need(config, pool, descriptors, workers)
    lines.append(f"  load-balancer memory at most {sizing.mebibytes(memory.peak)}, "
                 f"besides the pool of {pool} mbufs ({need.total} needed: {need.explain()})")
    return lines


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")
