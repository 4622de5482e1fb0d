"""rplbctl: inspect and change a running rplb-dpdk through its control socket.

    rplbctl [--socket PATH] COMMAND ...

Every change is validated like the services file and applied atomically by
rplb-dpdk (all of it or nothing).  Errors are one line on stderr and a
non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

from rplb.control.client import request
from rplb.control.protocol import DEFAULT_SOCKET, ControlError

PROG = "rplbctl"
#: Down backends rplbctl status names (service list shows them all).
STATUS_DOWN_SHOWN = 20

DESCRIPTION = """\
Inspect and change a running rplb-dpdk through its control socket.  Changes
are validated like the services file and applied atomically: all of a change
or nothing.

SIGHUP and `rplbctl reload` re-read rplb-dpdk's --config file and replace the
running configuration: changes made with rplbctl and not written back with
`rplbctl save` are lost then.  `backend disable`/`enable` are run-time state,
not configuration: a reload keeps them, `save` does not write them, a restart
forgets them."""

EPILOG = """\
examples:
  rplbctl status
  rplbctl service list
  rplbctl service add 10.0.0.102:tcp:80 --name web2 --backend 192.168.1.20:8080:5
  rplbctl service add [fd00::100]:tcp:80 --backend [fd00:1::10]:8080:5   (IPv6: brackets)
  rplbctl service del web2
  rplbctl backend add web 192.168.1.13:8080 --weight 5
  rplbctl backend set-weight web 192.168.1.11:8080 0     (drain: flows stay, no new ones)
  rplbctl backend del web 192.168.1.11:8080
  rplbctl backend disable web 192.168.1.11:8080          (down whatever its health check says)
  rplbctl backend enable web 192.168.1.11:8080
  rplbctl stats --json
  rplbctl save                                           (to the --config file)

A service is named by its name or by VIP:PROTO:PORT (10.0.0.100:tcp:80); an
IPv6 address with a port takes brackets: [fd00::100]:tcp:80, [fd00:1::10]:8080."""


class UsageError(Exception):
    """A malformed argument, found before anything is sent."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(2, f"{PROG}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--socket", metavar="PATH", default=DEFAULT_SOCKET,
                   help=f"rplb-dpdk's --control-socket (default: {DEFAULT_SOCKET})")
    p.add_argument("--timeout", type=_seconds, default=30.0, metavar="S",
                   help="seconds to wait for a reply (default: 30)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def json_flag(parser):
        parser.add_argument("--json", action="store_true", help="print the reply as JSON")

    json_flag(sub.add_parser("status", help="process, ports, configuration, flows"))

    service = sub.add_parser("service", help="list, add or delete services")
    service_sub = service.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    service_sub.required = True
    json_flag(service_sub.add_parser("list", help="services, backends, weights, counters"))
    add = service_sub.add_parser("add", help="add a service")
    add.add_argument("key", metavar="VIP:PROTO:PORT",
                     help="e.g. 10.0.0.102:tcp:80, [fd00::102]:tcp:80")
    add.add_argument("--name", help="a unique name (letters, digits, _ . -)")
    add.add_argument("--backend", action="append", default=[], metavar="IP:PORT[:WEIGHT]",
                     help="a backend (repeat for more); weight default 1; IPv6 in "
                          "brackets: [fd00:1::10]:8080:5")
    delete = service_sub.add_parser("del", help="delete a service")
    delete.add_argument("service", metavar="SERVICE", help="name or VIP:PROTO:PORT")

    backend = sub.add_parser("backend", help="add, delete, re-weight, disable or enable a "
                                             "backend")
    backend_sub = backend.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    backend_sub.required = True
    badd = backend_sub.add_parser("add", help="add a backend to a service")
    badd.add_argument("service", metavar="SERVICE", help="name or VIP:PROTO:PORT")
    badd.add_argument("backend", metavar="IP:PORT")
    badd.add_argument("--weight", type=_integer("--weight"), default=1,
                      help="0-65535, default 1; 0 = drain")
    bdel = backend_sub.add_parser("del", help="delete a backend (its flows move)")
    bdel.add_argument("service", metavar="SERVICE")
    bdel.add_argument("backend", metavar="IP:PORT")
    bset = backend_sub.add_parser("set-weight",
                                  help="change a weight (0 drains: flows stay, no new ones)")
    bset.add_argument("service", metavar="SERVICE")
    bset.add_argument("backend", metavar="IP:PORT")
    bset.add_argument("weight", metavar="WEIGHT", type=_integer("WEIGHT"))
    bdisable = backend_sub.add_parser(
        "disable", help="take a backend down (no new flows; its flows stay unless the "
                        "service's health check says on_down: reset) until `enable`, "
                        "whatever its health check says; kept by reloads, not saved")
    bdisable.add_argument("service", metavar="SERVICE")
    bdisable.add_argument("backend", metavar="IP:PORT")
    benable = backend_sub.add_parser(
        "enable", help="undo `disable` (the backend is up again if its health check says so)")
    benable.add_argument("service", metavar="SERVICE")
    benable.add_argument("backend", metavar="IP:PORT")

    json_flag(sub.add_parser("flows", help="how many flows the flow tables hold"))
    json_flag(sub.add_parser("stats", help="ports, fast-path counters, per-service counters"))
    sub.add_parser("reload", help="re-read the --config file (same as SIGHUP)")
    save = sub.add_parser("save", help="write the running configuration to a services file")
    save.add_argument("file", nargs="?", metavar="FILE",
                      help="default: rplb-dpdk's --config file")
    return p


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0 and at most 86400")
    return value


def _integer(what: str):
    def parse(text: str) -> int:
        try:
            return int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    parse.__name__ = what
    return parse


def _backend_address(text: str, allow_weight: bool) -> dict:
    """IP:PORT (or IP:PORT:WEIGHT; an IPv6 IP in brackets, [IP]:PORT) ->
    request fields; the values are checked by rplb."""
    from rplb.config import split_address
    shape = "IP:PORT[:WEIGHT]" if allow_weight else "IP:PORT"
    try:
        address, parts = split_address(text, (1, 2) if allow_weight else (1,), shape,
                                       "192.168.1.10:8080 or [fd00:1::10]:8080")
    except ValueError as err:
        raise UsageError(f"backend {err}") from None
    fields = {"ip": address}
    for name, value in zip(("port", "weight"), parts):
        try:
            fields[name] = int(value, 10)
        except ValueError:
            raise UsageError(f"backend {text!r}: {name} {value!r} is not an integer") from None
    return fields


def _service_key(text: str) -> dict:
    from rplb.config import split_address
    try:
        vip, (proto, port) = split_address(text, (2,), "VIP:PROTO:PORT",
                                           "10.0.0.100:tcp:80 or [fd00::100]:tcp:80")
    except ValueError as err:
        raise UsageError(f"service {err}") from None
    try:
        port_number = int(port, 10)
    except ValueError:
        raise UsageError(f"service {text!r}: port {port!r} is not an integer") from None
    return {"vip": vip, "proto": proto, "port": port_number}


def build_request(args: argparse.Namespace) -> dict:
    command = args.command
    if command in ("status", "flows", "stats", "reload"):
        return {"cmd": command}
    if command == "save":
        req = {"cmd": "save"}
        if args.file:
            req["path"] = os.path.abspath(args.file)
        return req
    if command == "service":
        if args.action == "list":
            return {"cmd": "service.list"}
        if args.action == "del":
            return {"cmd": "service.del", "service": args.service}
        service = _service_key(args.key)
        if args.name is not None:
            service = {"name": args.name, **service}
        service["backends"] = [_backend_address(b, allow_weight=True) for b in args.backend]
        return {"cmd": "service.add", "service": service}
    # backend
    fields = _backend_address(args.backend, allow_weight=False)
    req = {"cmd": f"backend.{args.action}", "service": args.service, **fields}
    if args.action in ("add", "set-weight"):
        req["weight"] = args.weight
    return req


# ---- output ----------------------------------------------------------------

def _format_status(reply: dict) -> str:
    lcores = reply["lcores"]
    lines = [f"rplb-dpdk pid {reply['pid']}, up {reply['uptime_s']:.1f} s, "
             f"{reply['engine']} engine on lcore{'' if len(lcores) == 1 else 's'} "
             f"{', '.join(map(str, lcores))}"
             + (f" (steering in {reply['steering']})" if reply.get("steering") else "")]
    for port in reply["ports"]:
        link = port.get("link") or {}
        state = ("link up" if link.get("up") else "link down") if link else "link ?"
        lines.append(f"{port['role']} port {port['port_id']} ({port['name']}, {port['driver']}): "
                     f"{state}, tx checksum offload {'on' if port['tx_cksum_offload'] else 'off'}")
    if reply["services"] is None:
        lines.append("load balancing off (pass-through; started without --config)")
    else:
        lines.append(f"services {reply['services']}, backends {reply['backends']}, "
                     f"flows {reply['flows']}")
    health = reply.get("health_checks")
    if health:
        lines.append(f"health checks from {health['source']} on {health['interface']}: "
                     f"{health['checked']} backends checked ({health['probes']} probes); "
                     f"kernel interface: {health['to_kernel']} frames in, "
                     f"{health['from_kernel']} out, {health['kernel_dropped']} dropped")
    down = reply.get("backends_down")
    if down is not None:
        import time
        now = time.time()
        lines.append(f"backends down: {len(down)}" + (":" if down else ""))
        for entry in down[:STATUS_DOWN_SHOWN]:
            state = {"state": "down", **entry}
            lines.append(f"  {entry['service']}: {entry['backend']} "
                         f"{_state_text(state, now)}")
        if len(down) > STATUS_DOWN_SHOWN:
            lines.append(f"  ... and {len(down) - STATUS_DOWN_SHOWN} more "
                         "(rplbctl service list shows them all)")
    lines.append(_config_line(reply))
    lines.append(f"control socket {reply['control_socket']}")
    return "\n".join(lines)


def _config_line(reply: dict) -> str:
    if not reply.get("config_file"):
        return "config: none (no --config: changes live until rplb-dpdk stops; "\
               "rplbctl save FILE writes them)"
    if reply.get("saved"):
        return f"config: {reply['config_file']} (the running configuration is saved)"
    return (f"config: {reply['config_file']} (the running configuration differs: "
            "not saved: rplbctl save to keep it)")


def _format_services(reply: dict, now: Optional[float] = None) -> str:
    import time
    now = time.time() if now is None else now
    rows = [("Prot", "VirtualAddress:Port / -> Backend:Port", "Name / Weight",
             "ActiveFlows", "NewFlows", "Packets", "State")]
    for svc in reply["services"]:
        c = svc["counters"]
        health = svc.get("health")
        check = f"{health['type']} check" if health else "no check"
        if svc.get("failing_open"):
            check += ", all down: failing open"
        rows.append((svc["proto"].upper(), _endpoint(svc["vip"], svc["port"]),
                     svc.get("name") or "-",
                     str(c["active_flows"]), str(c["new_flows"]), str(c["packets"]), check))
        for b in svc["backends"]:
            bc = b["counters"]
            rows.append(("", f"  -> {_endpoint(b['ip'], b['port'])}", str(b["weight"])
                         + (" (drain)" if b["weight"] == 0 else ""),
                         str(bc["active_flows"]), str(bc["new_flows"]), str(bc["packets"]),
                         _state_text(b.get("state"), now)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    if len(rows) == 1:
        lines.append("(no services)")
    return "\n".join(lines)


def _endpoint(address: str, port: int) -> str:
    """ip:port, an IPv6 address in brackets (the reply's addresses are
    canonical already)."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _state_text(state: Optional[dict], now: float) -> str:
    """up / down, why, and for how long: "down (connection refused) 12s"."""
    if not state:
        return "up"
    why = []
    health, reason = state.get("health"), state.get("reason")
    if state.get("disabled"):
        why.append("disabled")
    if health == "down":
        why.append("health down" + (f": {reason}" if reason else ""))
    elif health == "up" and state.get("disabled"):
        why.append("health up")
    elif health == "up" and reason:
        why.append(reason)
    elif health == "unknown":
        why.append("not checked yet")
    text = state["state"] + (f" ({'; '.join(why)})" if why else "")
    if state.get("since"):
        text += f" {_duration(now - state['since'])}"
    return text


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _format_flows(reply: dict) -> str:
    lines = [f"flows: {reply['flows']} (created {reply['flows_created']}, expired "
             f"{reply['flows_expired']}, moved {reply['flows_moved']}, not stored because the "
             f"table was full {reply['flow_table_full']}; table size {reply['flow_table_size']} "
             "per worker)"]
    for svc in reply["services"]:
        lines.append(f"  {svc['service']} [{svc['key']}]: {svc['active_flows']} active")
    if reply.get("sample") is None:
        lines.append(f"sample: {reply.get('sample_note')}")
        return "\n".join(lines)
    lines.append(f"sample of {len(reply['sample'])} (client -> service -> backend, state, idle, "
                 "worker lcore):")
    for f in reply["sample"]:
        lines.append(f"  {f['client']} -> {f['service']} -> {f['backend']}  {f['state']}  "
                     f"{f['idle_s']:.1f} s  lcore {f.get('lcore', '?')}")
    return "\n".join(lines)


def _format_stats(reply: dict) -> str:
    from rplb.stats import format_ports, format_rplb
    snapshot = reply["stats"]
    return format_ports(snapshot) + "\n" + format_rplb(snapshot)


def print_reply(args: argparse.Namespace, req: dict, reply: dict) -> None:
    cmd = req["cmd"]
    if getattr(args, "json", False):
        body = reply["stats"] if cmd == "stats" else reply
        print(json.dumps(body, indent=1))
        return
    if cmd == "status":
        print(_format_status(reply))
    elif cmd == "service.list":
        print(_format_services(reply))
    elif cmd == "flows":
        print(_format_flows(reply))
    elif cmd == "stats":
        print(_format_stats(reply))
    elif cmd == "reload":
        print(f"reloaded {reply['config_file']}: {reply['services']} services")
    elif cmd == "save":
        print(f"saved the running configuration ({reply['services']} services) to "
              f"{reply['path']}")
    else:
        print(reply["message"])
    for note in reply.get("notes", ()):
        print(f"{PROG}: note: {note}", file=sys.stderr)
    if cmd in ("backend.disable", "backend.enable"):
        print(f"{PROG}: note: a backend's disabled state is run-time state: reloads keep it, "
              "save does not write it, a restart forgets it", file=sys.stderr)
    elif cmd not in ("status", "service.list") and reply.get("config_file") \
            and reply.get("saved") is False:
        print(f"{PROG}: note: not saved: rplbctl save to keep it "
              f"(SIGHUP or rplbctl reload re-reads {reply['config_file']})", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        req = build_request(args)
        reply = request(args.socket, req, timeout=args.timeout)
    except (UsageError, ControlError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"{PROG}: error: {reply.get('error', 'refused (no reason given)')}",
              file=sys.stderr)
        return 1
    try:
        print_reply(args, req, reply)
    except BrokenPipeError:        # e.g. rplbctl stats | head
        try:
            sys.stdout.close()
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
