"""rplb-dpdk: run the load balancer on two DPDK ports.

    rplb-dpdk [EAL options] -- [rplb options]
    rplb-dpdk [rplb options]               (EAL defaults)
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import List, Optional, Sequence, Tuple

from rplb.control import DEFAULT_SOCKET as DEFAULT_CONTROL_SOCKET

PROG = "rplb-dpdk"

DESCRIPTION = """\
Reverse-proxy (NAT) L4 load balancer on DPDK.  Port F (frontend) faces the
clients, port B (backend) the real servers.  Without --config every frame is
passed through unchanged (a bump in the wire); with --config, TCP/UDP to a
virtual service vip:proto:port is rewritten to a backend chosen by Maglev
consistent hashing, replies are rewritten back, pings to VIPs are answered.

EAL options (DPDK's own, e.g. -l 0-1 --vdev ... --no-huge -m 1024) come
before `--`; without `--` every argument is an rplb option and EAL uses its
defaults (all cores, hugepages, PCI devices)."""

EPILOG = """\
examples:
  rplb-dpdk --ports 0,1 --config /etc/rplb/services.yaml --stats-period 5
  rplb-dpdk --no-huge -m 1024 -l 0-1 --no-pci \\
      --vdev net_pcap0,rx_pcap=clients.pcap,tx_pcap=to-clients.pcap \\
      --vdev net_pcap1,rx_pcap=servers.pcap,tx_pcap=to-servers.pcap \\
      -- --config examples/services.yaml --duration 2

signals: SIGINT/SIGTERM stop gracefully (final statistics, ports closed);
SIGHUP re-reads --config: a valid file is applied atomically, an invalid one
is reported and the running configuration keeps serving.

control: rplbctl changes the running configuration through --control-socket
(default /run/rplb/rplb.sock); SIGHUP replaces such changes unless they were
written back with `rplbctl save`."""


class CliError(Exception):
    """One line for the operator, exit status 1."""


def split_argv(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(EAL arguments, rplb arguments), split at the first `--`."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return [], argv


def _port_pair(text: str) -> Tuple[int, int]:
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not F,B (two port ids, frontend then backend, e.g. 0,1)")
    front, back = (int(p) for p in parts)
    if front == back:
        raise argparse.ArgumentTypeError(
            f"{text!r}: F,B must be two different port ids (frontend, backend), e.g. 0,1")
    return front, back


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
        return value
    return parse


def _prometheus_address(text: str):
    from rplb.prometheus import parse_address
    return parse_address(text)


class _Parser(argparse.ArgumentParser):
    """argparse whose error line reads `rplb-dpdk: error: ...` like the others."""

    def error(self, message: str):
        if message.startswith("unrecognized arguments"):
            message += " (EAL options go before `--`, rplb options after it)"
        self.print_usage(sys.stderr)
        self.exit(2, f"{PROG}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"{PROG} [EAL options] --", description=DESCRIPTION,
                epilog=EPILOG, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ports", type=_port_pair, default=(0, 1), metavar="F,B",
                   help="frontend and backend port ids (default: 0,1)")
    p.add_argument("--config", metavar="FILE",
                   help="services file (YAML); enables load balancing. SIGHUP re-reads it")
    p.add_argument("--stats-period", type=_positive(float), metavar="N",
                   help="print testpmd-style port statistics and rplb counters every N s")
    p.add_argument("--duration", type=_positive(float), metavar="S",
                   help="stop by itself after S seconds (default: run until SIGINT/SIGTERM)")
    p.add_argument("--stats-json", metavar="FILE",
                   help="write the final statistics as JSON to FILE at exit")
    p.add_argument("--software-checksums", action="store_true",
                   help="never use TX checksum offload, even where the port has it")
    p.add_argument("--mbufs", type=_positive(int), default=16383, metavar="N",
                   help="mbufs in the packet pool (default: 16383)")
    p.add_argument("--descriptors", type=_positive(int), default=1024, metavar="N",
                   help="rx and tx descriptors per port (default: 1024)")
    p.add_argument("--control-socket", metavar="PATH", default=DEFAULT_CONTROL_SOCKET,
                   help="UNIX socket for rplbctl, mode 0600 (default: "
                        f"{DEFAULT_CONTROL_SOCKET}); `none` disables it")
    p.add_argument("--list-drivers", action="store_true",
                   help="list the PMDs of this DPDK and their device arguments, then exit")
    p.add_argument("--prometheus", type=_prometheus_address, metavar="[ADDR:]PORT",
                   help="serve Prometheus metrics at http://ADDR:PORT/metrics "
                        "(ADDR default 127.0.0.1; default: off)")
    return p


def log(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def list_drivers() -> int:
    from rplb import pmdinfo
    try:
        print(pmdinfo.format_drivers(pmdinfo.list_drivers()))
    except FileNotFoundError as err:
        raise CliError(str(err)) from None
    return 0


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_HANDLED = _STOP_SIGNALS | {signal.SIGHUP}


def run(eal_args: List[str], args: argparse.Namespace) -> int:
    # Block the signals before any thread exists: EAL's threads and the
    # control server's inherit the mask, so the signals reach only this
    # thread, which waits for them in _serve.  (Importing numpy below starts
    # an OpenBLAS thread: with the signals unblocked there, a SIGINT arriving
    # while this thread is busy became a KeyboardInterrupt, a SIGHUP killed
    # the process.)
    signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
    from rplb.appliance import Appliance, Options, SetupError
    from rplb.config import ConfigError, load_config
    from rplb.errors import RplbError
    from rplb.stats import format_ports, format_rplb

    config = None
    if args.config:
        try:
            config = load_config(args.config)
        except ConfigError as err:
            raise CliError(str(err)) from None

    control = None
    if args.control_socket != "none":
        from rplb.control import ControlError, ControlServer
        control = ControlServer(args.control_socket, log=log)
        try:
            control.bind()          # before EAL: fails fast if another rplb owns it
        except ControlError as err:
            raise CliError(str(err)) from None

    appliance = Appliance(eal_args, Options(
        ports=args.ports, config=config, mbufs=args.mbufs, rx_descriptors=args.descriptors,
        tx_descriptors=args.descriptors, software_checksums=args.software_checksums))
    status = 0
    telemetry = prometheus = None
    try:
        try:
            appliance.start()
        except (SetupError, RplbError) as err:
            raise CliError(str(err)) from None
        from rplb.control import Controller
        controller = Controller(appliance, args.config, log=log,
                                socket_path=control.path if control else None)
        if control is not None:
            control.start(controller)
            log(f"control socket {control.path} (rplbctl --socket {control.path})")
        from rplb.telemetry import TelemetryPublisher
        telemetry = TelemetryPublisher(controller.snapshot, log=log)
        try:
            telemetry.start()
        except RplbError as err:
            log(f"DPDK telemetry: cannot register /rplb/stats, /rplb/services: {err}")
        if args.prometheus:
            from rplb.prometheus import PrometheusServer
            prometheus = PrometheusServer(args.prometheus, controller.snapshot, log=log)
            try:
                prometheus.start()
            except OSError as err:
                host, port = args.prometheus
                raise CliError(f"--prometheus {host}:{port}: cannot listen: "
                               f"{err.strerror or err}") from None
            log(f"prometheus metrics at {prometheus.url}")
        for port in appliance.ports:
            log(f"port {port.port_id} ({port.name}, {port.driver}): "
                f"tx checksum offload {'on' if port.tx_cksum_offload else 'off'}")
        log("dpdk-dumpcap can capture on these ports" if appliance.pdump else
            f"dpdk-dumpcap cannot attach ({appliance.pdump_error}; it needs hugepages "
            "and no --no-shconf)")
        log(f"forwarding with the {appliance.workers[0].engine} engine on lcore "
            f"{appliance.workers[0].lcore_id}"
            + (f", {len(config.services)} services" if config else "")
            + " (Ctrl-C to stop)")
        _serve(appliance, args, format_ports, format_rplb, controller)
        for observer in (prometheus, telemetry):
            if observer is not None:
                observer.close()    # no snapshot while the workers stop
        if control is not None:
            control.close()         # no change may run while the workers stop
        appliance.stop_workers()
        final = appliance.snapshot()
        print("\n  ---------------------- final statistics ----------------------", flush=True)
        print(format_ports(final), flush=True)
        print(format_rplb(final), flush=True)
    finally:
        for observer in (prometheus, telemetry):
            if observer is not None:
                observer.close()
        if control is not None:
            control.close()
        try:
            appliance.close()
        except RplbError as err:
            log(f"while closing: {err}")
            status = 1
    if appliance.mbufs_in_use_at_exit:
        log(f"{appliance.mbufs_in_use_at_exit} mbufs were not returned to the pool (a leak)")
        status = 3
    if args.stats_json:
        final["mbufs_in_use_at_exit"] = appliance.mbufs_in_use_at_exit
        try:
            with open(args.stats_json, "w") as f:
                json.dump(final, f, indent=1, default=str)
        except OSError as err:
            raise CliError(f"--stats-json: cannot write {args.stats_json}: "
                           f"{err.strerror or err}") from None
    return status


def _serve(appliance, args, format_ports, format_rplb, controller) -> None:
    """Wait for signals, the statistics period and the duration."""
    start = time.monotonic()
    deadline = start + args.duration if args.duration else None
    next_stats = start + args.stats_period if args.stats_period else None
    previous, previous_at = appliance.snapshot(), start
    while True:
        now = time.monotonic()
        wakeups = [t for t in (deadline, next_stats) if t is not None]
        timeout = max(0.0, min(wakeups) - now) if wakeups else 3600.0
        info = signal.sigtimedwait(_HANDLED, timeout)
        now = time.monotonic()
        if info is not None and info.si_signo in _STOP_SIGNALS:
            log(f"{signal.Signals(info.si_signo).name}: stopping")
            return
        if info is not None and info.si_signo == signal.SIGHUP:
            controller.reload_logged("SIGHUP")
        if deadline is not None and now >= deadline:
            return
        if next_stats is not None and now >= next_stats:
            snap = appliance.snapshot()
            print(format_ports(snap, previous, now - previous_at), flush=True)
            print(format_rplb(snap), flush=True)
            previous, previous_at = snap, now
            next_stats += args.stats_period


def main(argv: Optional[Sequence[str]] = None) -> int:
    eal_args, rplb_args = split_argv(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(rplb_args)
    try:
        if args.list_drivers:
            return list_drivers()
        return run(eal_args, args)
    except CliError as err:
        log(f"error: {err}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
