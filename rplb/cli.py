"""rplb-dpdk: run the load balancer on two DPDK ports.

    rplb-dpdk [EAL options] -- [rplb options]
    rplb-dpdk [rplb options]               (EAL defaults)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import List, Optional, Sequence, Tuple

from rplb import sizing
from rplb.console import ERR, INFO, WARNING, Stream, is_journal, one_line
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
defaults (all cores, hugepages, PCI devices).  Every lcore but the main one
runs a worker with an rx/tx queue pair of its own on each port (e.g. -l 0-4:
four workers; net_af_packet needs qpairs=4); a flow's frames go to the
worker that owns its client address, steered by the NICs where both ports
accept an rte_flow RSS rule, else by the workers."""

EPILOG = """\
examples:
  rplb-dpdk --ports 0,1 --config /etc/rplb/services.yaml --stats-period 5
  rplb-dpdk --no-huge -m 1024 -l 0-1 --no-pci \\
      --vdev net_pcap0,rx_pcap=clients.pcap,tx_pcap=to-clients.pcap \\
      --vdev net_pcap1,rx_pcap=servers.pcap,tx_pcap=to-servers.pcap \\
      -- --config examples/services.yaml --duration 2

  rplb-dpdk --check-config /etc/rplb/services.yaml      (validate, no DPDK)
  rplb-dpdk --install-service                           (systemd unit, /etc/rplb)

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


def _descriptor_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    problem = sizing.check_descriptor_count(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


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

    def print_help(self, file=None):
        # argparse's own print_help ignores a failed write, so with an
        # unbuffered stdout (PYTHONUNBUFFERED=1) `--help | head` with the
        # reader gone would exit 0; the write's BrokenPipeError is main's.
        (file or sys.stdout).write(self.format_help())


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
    p.add_argument("--mbufs", type=_positive(int), default=None, metavar="N",
                   help="mbufs in the packet pool, at least what the rings, the bursts and "
                        "the fragments the workers may hold need (refused otherwise, with "
                        "the figure; default: 16383, or what the rings, bursts and "
                        "fragments of many workers need)")
    p.add_argument("--descriptors", type=_descriptor_count, default=1024, metavar="N",
                   help="rx and tx descriptors per port queue, a power of two within the "
                        "port's limits (default: 1024)")
    p.add_argument("--control-socket", metavar="PATH", default=DEFAULT_CONTROL_SOCKET,
                   help="UNIX socket for rplbctl, mode 0600 (default: "
                        f"{DEFAULT_CONTROL_SOCKET}); `none` disables it")
    p.add_argument("--list-drivers", action="store_true",
                   help="list the PMDs of this DPDK and their device arguments, then exit")
    p.add_argument("--check-config", nargs="?", const="", metavar="FILE",
                   help="validate the services file (default: --config's), print its "
                        "services, backends and the memory its tables will take, then exit "
                        "0 (valid) or 1; DPDK is not started")
    p.add_argument("--install-service", action="store_true",
                   help="install the systemd unit rplb.service (starting this rplb-dpdk) "
                        "and an example /etc/rplb/ (rplb.env: options; services.yaml); "
                        "existing files are never overwritten")
    p.add_argument("--root", metavar="DIR", default="/",
                   help="with --install-service: install under DIR instead of / (default: /)")
    p.add_argument("--prometheus", type=_prometheus_address, metavar="[ADDR:]PORT",
                   help="serve Prometheus metrics at http://ADDR:PORT/metrics "
                        "(ADDR default 127.0.0.1; default: off)")
    return p


# While rplb-dpdk runs, stdout and stderr are written by threads of their
# own (rplb/console.py): a reader who stops reading never blocks the
# control plane.  Before and after, plain prints.
_stderr: Optional[Stream] = None
_stdout: Optional[Stream] = None


def log(message: str, priority: int = INFO) -> None:
    """One line on stderr, `rplb-dpdk: message`; never blocks while running."""
    line = f"{PROG}: {one_line(message)}"
    if _stderr is not None:
        _stderr.put(line, priority)
    else:
        print(line, file=sys.stderr, flush=True)


def output(text: str) -> None:
    """A block of text on stdout (statistics); never blocks while running."""
    if _stdout is not None:
        _stdout.put(text)
    else:
        print(text, flush=True)


def _open_streams() -> None:
    """The writer threads of stdout and stderr, and DPDK's log redirected
    into stderr's queue (before EAL starts, so its start-up messages take
    the same way).  Call with the signals blocked: the threads inherit it."""
    global _stderr, _stdout
    from rplb import dataplane
    _stderr = Stream(2, "stderr", priorities=is_journal(2))
    _stdout = Stream(1, "stdout", on_broken=lambda reason: log(
        f"warning: stdout: {reason}: statistics are no longer printed", WARNING))
    read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    dataplane.log_to_fd(write_end)
    _stderr.add_source(read_end, dataplane.log_dropped)


def _close_streams() -> None:
    global _stderr, _stdout
    for stream in (_stdout, _stderr):
        if stream is not None:
            stream.close()
    _stderr = _stdout = None


def list_drivers() -> int:
    from rplb import pmdinfo
    try:
        print(pmdinfo.format_drivers(pmdinfo.list_drivers()), flush=True)
    except FileNotFoundError as err:
        raise CliError(str(err)) from None
    return 0


def check_config(eal_args: List[str], args: argparse.Namespace) -> int:
    """--check-config: 0 if the file is valid (summary on stdout), else
    CliError; EAL is never started, its lcore options are only read (one
    worker per lcore but the main one)."""
    from rplb.check_config import empty_warning, mbuf_need, summary
    from rplb.config import ConfigError, load_config
    from rplb.lcores import LcoreError, worker_count
    path = args.check_config or args.config
    if not path:
        raise CliError("--check-config: which file? give --check-config FILE")
    try:
        workers = worker_count(eal_args)
    except LcoreError as err:
        raise CliError(str(err)) from None
    try:
        config = load_config(path)
    except ConfigError as err:
        raise CliError(str(err)) from None
    print("\n".join(summary(path, config, args.mbufs, args.descriptors, workers)), flush=True)
    if not config.services:
        log(empty_warning(path), WARNING)
    if args.mbufs is not None:
        problem = sizing.check_mbufs(args.mbufs, mbuf_need(config, args.mbufs,
                                                           args.descriptors, workers))
        if problem:
            raise CliError(problem)
    return 0


def install_service(args: argparse.Namespace) -> int:
    from rplb import service
    try:
        done = service.install(args.root)
    except service.InstallError as err:
        raise CliError(str(err)) from None
    for path, what in done:
        print(f"{what} {path}" + (" (it exists: left as it is)" if what == "kept" else ""),
              flush=True)
    if os.path.abspath(args.root) == "/":
        print("next: edit /etc/rplb/rplb.env (ports, cores, hugepages) and "
              "/etc/rplb/services.yaml, then: systemctl daemon-reload && "
              "systemctl enable --now rplb", flush=True)
    return 0


def check_control_socket_directory(path: str) -> None:
    """Only the default directory (/run/rplb) is created: any other that
    does not exist is a typo rplb-dpdk must not turn into a directory tree."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(directory) or directory == os.path.dirname(DEFAULT_CONTROL_SOCKET):
        return
    what = "is not a directory" if os.path.exists(directory) else "does not exist"
    raise CliError(f"--control-socket {path}: the directory {directory} {what}: create it "
                   "or choose another path (only the default "
                   f"{os.path.dirname(DEFAULT_CONTROL_SOCKET)} is created), or "
                   "--control-socket none")


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_HANDLED = _STOP_SIGNALS | {signal.SIGHUP}


def run(eal_args: List[str], args: argparse.Namespace) -> int:
    # Block the signals before any thread exists: EAL's threads, the
    # control server's and the console's inherit the mask, so the signals
    # reach only this thread, which waits for them in _serve.  (Importing
    # numpy below starts an OpenBLAS thread: with the signals unblocked
    # there, a SIGINT arriving while this thread is busy became a
    # KeyboardInterrupt, a SIGHUP killed the process.)
    signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
    _open_streams()
    try:
        return _run(eal_args, args)
    except CliError as err:
        log(f"error: {err}", ERR)
        return 1
    finally:
        _close_streams()


def _run(eal_args: List[str], args: argparse.Namespace) -> int:
    from rplb.appliance import Appliance, Options, SetupError
    from rplb.check_config import empty_warning
    from rplb.config import ConfigError, load_config
    from rplb.errors import RplbError
    from rplb.service import notify
    from rplb.stats import format_ports, format_rplb

    config = None
    if args.config:
        try:
            config = load_config(args.config)
        except ConfigError as err:
            raise CliError(str(err)) from None
        if not config.services:
            log(empty_warning(args.config), WARNING)

    control = None
    if args.control_socket != "none":
        check_control_socket_directory(args.control_socket)
        from rplb.control import ControlError, ControlServer
        control = ControlServer(args.control_socket, log=log)
        try:
            control.bind()          # before EAL: fails fast if another rplb owns it
        except ControlError as err:
            raise CliError(str(err)) from None

    appliance = Appliance(eal_args, Options(
        ports=args.ports, config=config, mbufs=args.mbufs, rx_descriptors=args.descriptors,
        tx_descriptors=args.descriptors, software_checksums=args.software_checksums,
        log=log))
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
                f"tx checksum offload {'on' if port.tx_cksum_offload else 'off'}, "
                f"{port.queues} queue pair{'' if port.queues == 1 else 's'}")
        for line in appliance.steering_log:
            log(line)
        if appliance.kernel is not None:
            kernel = appliance.kernel.describe()
            checked = sum(len(s.backends) for s in config.services if s.health is not None)
            log(f"health checks from {kernel['source']} on interface {kernel['interface']} "
                f"(port {kernel['port_id']}): {checked} backends checked")
        log("dpdk-dumpcap can capture on these ports" if appliance.pdump else
            f"dpdk-dumpcap cannot attach ({appliance.pdump_error}; it needs hugepages "
            "and no --no-shconf)")
        lcores = [w.lcore_id for w in appliance.workers]
        log(f"forwarding with the {appliance.workers[0].engine} engine on "
            f"lcore{'' if len(lcores) == 1 else 's'} {', '.join(map(str, lcores))}"
            + (f", {len(config.services)} services" if config else "")
            + " (Ctrl-C to stop)")
        notify("READY=1", f"STATUS={_status(appliance)}")
        _serve(appliance, args, format_ports, format_rplb, controller)
        notify("STOPPING=1")
        for observer in (prometheus, telemetry):
            if observer is not None:
                observer.close()    # no snapshot while the workers stop
        if control is not None:
            control.close()         # no change may run while the workers stop
        appliance.stop_workers()
        final = appliance.snapshot()
        output("\n  ---------------------- final statistics ----------------------\n"
               + format_ports(final) + "\n" + format_rplb(final))
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


def _status(appliance) -> str:
    """systemd's one-line STATUS= (systemctl status shows it)."""
    engine = appliance.workers[0].engine if appliance.workers else "no"
    if appliance.balancer is None:
        return f"forwarding ({engine} engine, every frame passes through)"
    services = len(appliance.balancer.config.services)
    return f"forwarding ({engine} engine, {services} service{'' if services == 1 else 's'})"


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
            from rplb.service import notify
            notify("RELOADING=1")
            controller.reload_logged("SIGHUP")
            if appliance.balancer is not None and not appliance.balancer.config.services:
                from rplb.check_config import empty_warning
                log(f"SIGHUP: {empty_warning(args.config)}", WARNING)
            notify("READY=1", f"STATUS={_status(appliance)}")
        if deadline is not None and now >= deadline:
            return
        if next_stats is not None and now >= next_stats:
            snap = appliance.snapshot()
            output(format_ports(snap, previous, now - previous_at) + "\n" + format_rplb(snap))
            previous, previous_at = snap, now
            next_stats += args.stats_period


#: Exit status after stdout's reader went away (a shell's 128 + SIGPIPE).
BROKEN_PIPE_STATUS = 141


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        try:
            return _main(argv)
        finally:
            # What is still buffered (--help's text) meets a broken pipe
            # here, inside the handler below, not at the interpreter's exit.
            sys.stdout.flush()
    except BrokenPipeError:
        # `rplb-dpdk --list-drivers | head`: the reader has what it wanted.
        # Point stdout at /dev/null so that the interpreter's last flush
        # does not fail again, and leave without a word.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE_STATUS


def _main(argv: Optional[Sequence[str]]) -> int:
    try:
        eal_args, rplb_args = split_argv(sys.argv[1:] if argv is None else argv)
        args = build_parser().parse_args(rplb_args)
        if args.list_drivers:
            return list_drivers()
        if args.check_config is not None:
            return check_config(eal_args, args)
        if args.install_service:
            return install_service(args)
        return run(eal_args, args)
    except CliError as err:
        log(f"error: {err}", ERR)
        return 1


if __name__ == "__main__":
    sys.exit(main())
