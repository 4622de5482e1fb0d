"""``rplb-dpdk --check-config FILE``: validate a services file and say what
it will cost, without starting DPDK (after ``nginx -t`` and ``haproxy -c``).

The memory figures come from the C side's own arithmetic
(rplb.contract.tables_memory / maglev_memory, rplb.dataplane.worker_memory:
the sizes its allocations use), so they cannot drift from what rplb-dpdk
will allocate.
"""

from __future__ import annotations

from typing import List

from rplb import sizing
from rplb.config import Config

#: Worker lcores today (one worker, one queue per port).
WORKERS = 1


def memory_estimate(config: Config, workers: int = WORKERS) -> sizing.MemoryEstimate:
    from rplb import contract, dataplane
    return sizing.MemoryEstimate(
        tables=contract.tables_memory(len(config.services), config.backend_count),
        maglev=config.maglev_memory(),
        worker=dataplane.worker_memory(config.flow_table_size, config.fragments),
        workers=workers)


def empty_warning(path: str) -> str:
    return (f"warning: {path} has no service: every frame passes through unchanged "
            "(add services, then SIGHUP, `rplbctl reload` or `systemctl reload rplb`)")


def mbuf_need(config: Config, mbufs: int, descriptors: int,
              workers: int = WORKERS) -> sizing.MbufNeed:
    """What a pool of mbufs must hold for this configuration."""
    from rplb import contract
    from rplb.kernel_interface import DESCRIPTORS
    kernel_queues = workers if config.health_checks is not None else 0
    return sizing.mbufs_needed(mbufs, ports=2, queues_per_port=1, workers=workers,
                               rx_descriptors=descriptors, tx_descriptors=descriptors,
                               burst=contract.BURST, fragments_held=config.fragments.held,
                               kernel_queues=kernel_queues, kernel_descriptors=DESCRIPTORS)


def summary(path: str, config: Config, mbufs: int, descriptors: int) -> List[str]:
    """The lines --check-config prints for a valid file."""
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
    memory = memory_estimate(config)
    lines.append(f"  lookup tables: {sizing.mebibytes(memory.tables)} and Maglev tables "
                 f"{sizing.mebibytes(memory.maglev)}; at most "
                 f"{sizing.mebibytes(2 * (memory.tables + memory.maglev))} while a change is "
                 f"applied (tables_memory_mb {config.tables_memory_mb})")
    lines.append(f"  flow table: {sizing.mebibytes(memory.worker)} per worker lcore "
                 f"({config.flow_table_size} flows, {config.fragments.datagrams} fragmented "
                 f"datagrams, counters included) x {_plural(memory.workers, 'worker')}")
    need = mbuf_need(config, mbufs, descriptors, memory.workers)
    lines.append(f"  load-balancer memory at most {sizing.mebibytes(memory.peak)}, "
                 f"besides the pool of {mbufs} mbufs ({need.total} needed: {need.explain()})")
    return lines


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")
