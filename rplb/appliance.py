"""The appliance: EAL, two ports, a mempool, the workers, and (with a
services file) the load balancer, started and stopped in DPDK's order; with
health_checks in the services file, also its own kernel interface on the
backend network (rplb.kernel_interface) and the health checks
(rplb.health).

Shutdown order (DPDK's examples): health checks stop -> stop flag -> wait
for lcores -> read the final counters -> stop and close ports (pcap files
complete; the kernel interface goes) -> check that every mbuf is back in
its pool -> free the pool -> EAL cleanup.
"""

from __future__ import annotations

import errno
import glob
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

from rplb import contract, dataplane, sizing, steering
from rplb.balancer import Balancer
from rplb.config import Config
from rplb.errors import RplbError
from rplb.kernel_interface import DESCRIPTORS as KERNEL_DESCRIPTORS
from rplb.kernel_interface import KERNEL_BURST, KernelInterface, KernelInterfaceError


class SetupError(Exception):
    """The appliance cannot start as asked; the message says what to change."""


# How to give a virtual port more queue pairs (one per worker lcore).
_QUEUE_HINTS = {
    "net_af_packet": "net_af_packet: qpairs=N",
    "net_pcap": "net_pcap: one rx_pcap=/rx_iface= and one tx_pcap=/tx_iface= per queue",
    "net_null": "net_null: it has as many as asked, up to its limit",
    "net_tap": "net_tap: queues as asked, up to its limit",
}


def sum_counters(parts: List[dict]) -> dict:
    """Counters shaped like a worker's ("port" by side, "drops", "events"),
    added up."""
    total = {"port": [dict.fromkeys(side, 0) for side in parts[0]["port"]],
             "drops": dict.fromkeys(parts[0]["drops"], 0),
             "events": dict.fromkeys(parts[0]["events"], 0)} if parts else None
    for part in parts:
        for side, counters in enumerate(part["port"]):
            for key, value in counters.items():
                total["port"][side][key] += value
        for group in ("drops", "events"):
            for key, value in part[group].items():
                total[group][key] += value
    return total


@dataclass
class Options:
    ports: Tuple[int, int] = (0, 1)
    config: Optional[Config] = None     # None: the pass-through engine
    mbufs: Optional[int] = None         # None: sizing.default_mbufs
    rx_descriptors: int = 1024
    tx_descriptors: int = 1024
    software_checksums: bool = False    # never use TX checksum offload
    drain_us: int = 100
    log: Optional[Callable[[str], None]] = None     # health checks' state changes


def hugepages_reserved() -> int:
    total = 0
    for path in glob.glob("/sys/kernel/mm/hugepages/hugepages-*/nr_hugepages"):
        try:
            with open(path) as f:
                total += int(f.read().strip() or 0)
        except (OSError, ValueError):
            continue
    return total


def check_eal_args(eal_args: Sequence[str]) -> None:
    """Catch what EAL would only report obscurely."""
    if "--no-huge" not in eal_args and hugepages_reserved() == 0:
        raise SetupError("no hugepages are reserved: reserve some (e.g. "
                         "`dpdk-hugepages.py --setup 2G`) or run without them with "
                         "`--no-huge -m 1024` before `--`")


def requested_vdevs(eal_args: Sequence[str]) -> List[str]:
    """The ethdev names given with --vdev (net_pcap0 of net_pcap0,rx_pcap=...)."""
    names = []
    args = list(eal_args)
    for i, arg in enumerate(args):
        if arg == "--vdev" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--vdev="):
            value = arg[len("--vdev="):]
        else:
            continue
        name = value.split(",", 1)[0].strip()
        if name.startswith(("net_", "eth_")):
            names.append(name)
    return names


class Appliance:
    """One running rplb: call start(), then stop() (always, also on errors)."""

    def __init__(self, eal_args: Sequence[str], options: Options):
        self.eal_args = list(eal_args)
        self.options = options
        self.pool = None
        self.ports: List = []
        self.lb = None
        self.balancer: Optional[Balancer] = None
        self.workers: List = []
        self.handoff = None                 # the rings between several workers
        self.steering_log: List[str] = []   # how frames reach their worker, per port
        self.kernel: Optional[KernelInterface] = None
        self.health = None                  # rplb.health.HealthChecker
        self.started_at = None
        self.mbufs_in_use_at_exit: Optional[int] = None
        self.pdump = False                  # dpdk-dumpcap can attach
        self.pdump_error: Optional[str] = None

    # ---- start ---------------------------------------------------------------

    def start(self) -> None:
        """Raises SetupError (operator mistake) or RplbError (DPDK failure);
        whatever was set up before the error is released by stop()."""
        check_eal_args(self.eal_args)
        try:
            dataplane.eal_init(["rplb-dpdk", *self.eal_args])
        except RplbError as err:
            hint = ("check the EAL options before `--` (rplb options go after it)"
                    if err.errno == errno.EINVAL else "see EAL's messages above")
            raise SetupError(f"{err}: {hint}") from None
        try:
            dataplane.pdump_init()
            self.pdump = True
        except RplbError as err:
            # Capture is a convenience: without it (e.g. --no-shconf) rplb runs.
            self.pdump_error = str(err)

        frontend_id, backend_id = self.options.ports
        available = dataplane.port_ids()
        # EAL only logs a vdev that fails to probe; its port is then missing
        # and the following ports' ids shift, so stop here.
        names = {dataplane.Port(p).name for p in available}
        failed = [name for name in requested_vdevs(self.eal_args) if name not in names]
        if failed:
            raise SetupError(
                f"--vdev {', '.join(failed)} failed to probe (no port was created): check "
                "its arguments (EAL's messages above say why; `rplb-dpdk --list-drivers` "
                "lists each driver's arguments)")
        if len(available) < 2:
            raise SetupError(
                f"rplb needs two DPDK ports (frontend, backend) but found {len(available)}: "
                "bind two NICs to a DPDK driver (dpdk-devbind.py) or create virtual ports, "
                "e.g. --vdev net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap "
                "--vdev net_pcap1,rx_pcap=in1.pcap,tx_pcap=out1.pcap")
        for role, port_id in (("frontend", frontend_id), ("backend", backend_id)):
            if port_id not in available:
                raise SetupError(f"--ports: {role} port {port_id} does not exist "
                                 f"(ports available: {', '.join(map(str, available))})")
        lcores = dataplane.worker_lcores()
        if not lcores:
            raise SetupError("rplb needs a worker lcore besides the main one: "
                             "give EAL at least two lcores, e.g. -l 0-1")

        ports = [dataplane.Port(port_id) for port_id in (frontend_id, backend_id)]
        config = self.options.config
        health_checks = config.health_checks if config is not None else None
        # Several workers of the load balancer steer frames to each other;
        # the pass-through engine keeps no state, so its workers need not.
        steered = config is not None and len(lcores) > 1
        # The kernel interface of health checks: a queue pair per worker
        # too, so that each exchanges frames with the kernel on its own.
        kernel_queues = len(lcores) if health_checks is not None else 0
        mbufs = self.check_resources(ports, len(lcores), steered, kernel_queues)
        self.pool = dataplane.Mempool("rplb_mbufs", mbufs, sizing.mempool_cache_size(mbufs))
        for port in ports:
            self.ports.append(port)
            port.configure(self.pool, self.options.rx_descriptors, self.options.tx_descriptors,
                           allow_tx_cksum_offload=not self.options.software_checksums,
                           queues=len(lcores))
        if health_checks is not None:
            # One queue pair per worker: each worker exchanges frames with
            # the kernel on its own, with no handoff between workers.
            self.kernel = KernelInterface(health_checks, queues=len(lcores))
            try:
                self.kernel.open(self.pool)
            except KernelInterfaceError as err:
                raise SetupError(str(err)) from None

        if config is not None:
            self.lb = dataplane.LoadBalancer(config.flow_table_size, config.timeouts,
                                             max_workers=len(lcores), fragments=config.fragments)
            if steered:
                self.handoff = dataplane.Handoff(len(lcores))
        # Create the workers (and with them their flow tables and fragment
        # state) before the first publish, so the tables are in place before
        # any packet.  Worker i polls queue i of each port (and of the kernel
        # interface).
        for index, lcore in enumerate(lcores):
            self.workers.append(dataplane.Worker(
                lcore, *self.ports, lb=self.lb, drain_us=self.options.drain_us, queue=index,
                handoff=self.handoff, handoff_index=index, **self._kernel_path(index)))
        if config is not None:
            self.balancer = Balancer(self.lb, config)
        for port in self.ports:
            port.start()
        self.steering_log = self.choose_steering()
        for worker in self.workers:
            worker.launch()
        self.started_at = time.monotonic()
        if health_checks is not None:
            from rplb.health import HealthChecker
            self.health = HealthChecker(self.balancer, health_checks,
                                        log=self.options.log or (lambda line: None))
            self.balancer.add_listener(self.health.update)
            self.health.start(self.balancer.config)

    def choose_steering(self) -> List[str]:
        """Hardware steering where both ports take the rule (each spreads
        IPv4 by the client address: the frontend by source, the backend by
        destination, one key), else software steering on both.  Returns the
        log lines that say which, per port."""
        if self.handoff is None:
            return []
        frontend, backend = self.ports
        refusals = {}
        for port, by_source in ((frontend, True), (backend, False)):
            reason = port.steer_by_client(by_source, steering.RSS_KEY)
            if reason is not None:
                refusals[port.port_id] = reason
                break           # software on both: the other need not try
        decision = steering.decide(
            [(port.port_id, port.name, role, port.reta_size)
             for port, role in zip(self.ports, ("frontend", "backend"))], refusals)
        if decision.hardware:
            self.handoff.steer_in_hardware(steering.RSS_KEY, decision.reta_size)
        else:
            for port in self.ports:
                port.remove_steering()
        return decision.log_lines(len(self.workers))

    def _kernel_path(self, queue: int) -> dict:
        """The exception path's arguments of the worker that owns queue."""
        if self.kernel is None:
            return {}
        settings = self.kernel.settings
        return {"kernel": self.kernel.port, "kernel_queue": queue,
                "local_address": settings.source.ip, "kernel_rate": settings.kernel_rate,
                "kernel_burst": KERNEL_BURST}

    def check_resources(self, ports, workers: int, steered: bool,
                        kernel_queues: int = 0) -> int:
        """Refuse a port without a queue pair for every worker, descriptor
        counts a port cannot take and a pool too small for the rings and
        bursts (SetupError naming the limit): each would otherwise start and
        forward nothing, or fail obscurely.  kernel_queues: of the kernel
        interface (its rings take mbufs too).  Returns the pool's size
        (--mbufs, or the default for this many workers)."""
        options = self.options
        for port in ports:
            if port.max_queues < workers:
                raise SetupError(
                    f"port {port.port_id} ({port.name}, {port.driver}) offers at most "
                    f"{port.max_queues} rx/tx queue pair{'' if port.max_queues == 1 else 's'}, "
                    f"and {workers} worker lcores need {workers} (one each): give it more "
                    f"queues ({_QUEUE_HINTS.get(port.driver, 'see its driver')}) or EAL "
                    f"fewer lcores")
            problem = sizing.check_port_descriptors(
                options.rx_descriptors, options.tx_descriptors, port.descriptor_limits,
                f"port {port.port_id} ({port.name}, {port.driver})")
            if problem:
                raise SetupError(problem)
        # One queue pair per worker on each port (start() above).  Each
        # worker of the load balancer may hold IPv4 fragments (mbufs) until
        # their datagram's first fragment comes, up to its bound.
        held = options.config.fragments.held if options.config is not None else 0

        def need_for(n_mbufs: int) -> sizing.MbufNeed:
            return sizing.mbufs_needed(
                n_mbufs, ports=len(ports), queues_per_port=workers, workers=workers,
                rx_descriptors=options.rx_descriptors, tx_descriptors=options.tx_descriptors,
                burst=contract.BURST,
                handoff_ring_size=dataplane.handoff_ring_size(workers) if steered else 0,
                fragments_held=held,
                kernel_queues=kernel_queues, kernel_descriptors=KERNEL_DESCRIPTORS)
        if options.mbufs is None:
            return sizing.default_mbufs(need_for)
        problem = sizing.check_mbufs(options.mbufs, need_for(options.mbufs))
        if problem:
            raise SetupError(problem)
        return options.mbufs

    # ---- run time ------------------------------------------------------------

    @property
    def frontend(self):
        return self.ports[0]

    @property
    def backend(self):
        return self.ports[1]

    def counters(self) -> dict:
        """The fast path's counters summed over workers."""
        return sum_counters([worker.counters() for worker in self.workers])

    def worker_counters(self) -> List[dict]:
        """Per worker, in lcore order: its lcore, its queue, and its counters
        shaped like counters() ("port", "drops", "events"), with the flows
        its flow table holds (load balancer only)."""
        out = []
        for index, worker in enumerate(self.workers):
            entry = {"lcore": worker.lcore_id, "queue": worker.queue, **worker.counters()}
            if self.lb is not None:
                entry["flows"] = self.lb.worker_flows(index)
            out.append(entry)
        return out

    def snapshot(self, services_limit: Optional[int] = None) -> dict:
        """Everything an operator sees: ports, fast-path counters (summed,
        and per worker under "workers"), services (the first services_limit
        of them; default all)."""
        workers = self.worker_counters()
        snap = {"uptime_s": time.monotonic() - self.started_at if self.started_at else 0.0,
                "engine": self.workers[0].engine if self.workers else None,
                "ports": [], **(sum_counters(workers) or {}), "workers": workers}
        if self.handoff is not None:
            snap["steering"] = self.handoff.mode
        for role, port in zip(("frontend", "backend"), self.ports):
            entry = {"role": role, "port_id": port.port_id, "name": port.name,
                     "driver": port.driver, "tx_cksum_offload": port.tx_cksum_offload,
                     "queues": port.queues}
            try:
                entry["ethdev"] = port.stats()
                entry["link"] = port.link()
            except RplbError:
                pass
            snap["ports"].append(entry)
        if self.balancer is not None:
            snap["services"] = self.balancer.service_stats(services_limit)
        if self.kernel is not None:
            snap["kernel_interface"] = {
                **self.kernel.describe(),
                "checked_backends": self.health.checked if self.health is not None else 0}
        if self.pool is not None:
            snap["mbufs"] = {"size": self.pool.size, "in_use": self.pool.in_use}
        return snap

    # ---- stop ----------------------------------------------------------------

    def stop_workers(self) -> None:
        """Stop the health checks, then every worker; then, none running,
        free (and count) what they handed each other and nobody took."""
        if self.health is not None:
            self.health.close()
        for worker in self.workers:
            worker.request_stop()
        for worker in self.workers:
            worker.stop()
        if self.handoff is not None:
            for worker in self.workers:
                worker.discard_handed_over()

    def close(self) -> None:
        """Release everything, in order, even after a failed start."""
        errors = []
        self.stop_workers()
        for port in self.ports:
            try:
                port.close()
            except RplbError as err:
                errors.append(err)
        if self.kernel is not None:
            try:
                self.kernel.close()
            except RplbError as err:
                errors.append(err)
            self.kernel = None
        for worker in self.workers:
            worker.close()
        if self.handoff is not None:
            self.handoff.close()
            self.handoff = None
        if self.pool is not None:
            self.mbufs_in_use_at_exit = self.pool.in_use
            self.pool.close()
        if self.balancer is not None:
            self.balancer.close()
        if self.lb is not None:
            self.lb.close()
        self.workers, self.ports, self.pool, self.lb = [], [], None, None
        if self.pdump:
            dataplane.pdump_uninit()
            self.pdump = False
        dataplane.eal_cleanup()
        if errors:
            raise errors[0]
