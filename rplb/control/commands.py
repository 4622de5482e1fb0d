"""What each control command does to the running appliance (the Controller),
and SIGHUP's reload.

Every change goes through the same validator as the services file (the
``Config.with_*``/``without_*`` edits) and one :meth:`Balancer.apply`, so it
is applied completely or not at all.  ``backend disable``/``enable``
change a backend's run-time state, not the configuration
(:meth:`Balancer.set_disabled`).  Changes, ``reload`` and SIGHUP are
serialised by one lock of the :class:`Controller`, so an edit is never
computed from a configuration that a concurrent reload has replaced; the
commands that only read (status, service list, flows, stats) do not take
it, so they answer while a large change is being built.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Callable, Optional

from rplb.control.files import same_file, write_atomically
from rplb.control.protocol import ControlError, command_label, one_line, parse_request

__all__ = ["Controller"]


class Controller:
    """Runs control commands (and SIGHUP reloads) against a started Appliance.

    ``config_path`` is the --config file (None without one); ``log`` prints
    one line on rplb-dpdk's stderr.
    """

    def __init__(self, appliance, config_path: Optional[str] = None,
                 log: Callable[[str], None] = None, socket_path: Optional[str] = None):
        self.appliance = appliance
        self.config_path = config_path
        self.socket_path = socket_path
        self._log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self._lock = threading.Lock()     # one change (or reload, or save) at a time
        balancer = appliance.balancer
        # What the --config file holds, as far as we know: loaded at start,
        # re-read by reload, written by save.  Unsaved = running != this.
        self._file_config = balancer.config if (balancer is not None and config_path) else None
        self._closed = False

    # -- entry points

    def handle_line(self, line: bytes) -> dict:
        """The reply to one request line; never raises."""
        try:
            cmd, fields = parse_request(line)
            return {"ok": True, **self.run(cmd, fields)}
        except ControlError as err:
            return {"ok": False, "error": one_line(str(err))}
        except Exception as err:   # a bug: report it, keep serving
            self._log(f"control: internal error: {type(err).__name__}: {err}")
            return {"ok": False, "error": one_line(
                f"internal error: {type(err).__name__}: {err}")}

    def run(self, cmd: str, fields: dict) -> dict:
        """Run a parsed command; returns the reply fields, raises ControlError."""
        handler = getattr(self, "_cmd_" + cmd.replace(".", "_").replace("-", "_"))
        return handler(**fields)

    def close(self) -> None:
        """Refuse further commands; waits for one in progress to finish."""
        with self._lock:
            self._closed = True

    def reload_logged(self, origin: str) -> None:
        """SIGHUP: re-read --config and log the outcome on stderr."""
        try:
            reply = self._reload(origin)
        except ControlError as err:
            self._log(f"{origin}: {err}")
            return
        for note in reply["notes"]:
            self._log(f"{origin}: {note}")
        self._log(f"{origin}: reloaded {self.config_path}: {reply['services']} services")

    # -- helpers

    def _check_open(self, cmd: str) -> None:
        if self._closed:
            raise ControlError(f"{command_label(cmd)}: rplb-dpdk is stopping")

    def _balancer(self, cmd: str):
        self._check_open(cmd)
        balancer = self.appliance.balancer
        if balancer is None:
            raise ControlError(
                f"{command_label(cmd)}: load balancing is off (rplb-dpdk runs the pass-through engine, "
                "without --config): start it with --config FILE to manage services")
        return balancer

    def _saved_state(self, config=None) -> dict:
        """Whether config (default: the running one) is what the --config
        file holds."""
        balancer = self.appliance.balancer
        if not self.config_path or balancer is None:
            return {"config_file": None, "saved": None}
        if config is None:
            config = balancer.config
        return {"config_file": os.path.abspath(self.config_path),
                "saved": config == self._file_config}

    def _change(self, cmd: str, edit: Callable, describe: Callable) -> dict:
        """Apply edit(config) -> new config atomically; describe(old, new) -> message."""
        from rplb.config import ConfigError, NotFoundError
        from rplb.errors import RplbError
        with self._lock:
            balancer = self._balancer(cmd)
            old = balancer.config
            try:
                new = edit(old)
            except ConfigError as err:
                raise ControlError(_config_message(cmd, err)) from None
            except NotFoundError as err:
                raise ControlError(f"{command_label(cmd)}: {err}") from None
            try:
                notes = balancer.apply(new)
            except (ConfigError, RplbError) as err:
                raise ControlError(f"{command_label(cmd)}: {err}") from None
            message = describe(old, new)
            reply = {"message": message, "notes": notes, **self._saved_state()}
        self._log(f"control: {message}")
        for note in notes:
            self._log(f"control: {note}")
        return reply

    def _reload(self, origin: str) -> dict:
        from rplb.config import ConfigError, load_config
        from rplb.errors import RplbError
        with self._lock:
            if self._closed:
                raise ControlError("rplb-dpdk is stopping")
            if not self.config_path or self.appliance.balancer is None:
                raise ControlError("no --config to reload")
            from rplb.gc_control import quiet_gc
            try:
                with quiet_gc():        # a large file: see quiet_gc
                    config = load_config(self.config_path)
                    notes = self.appliance.balancer.apply(config)
            except (ConfigError, RplbError) as err:
                raise ControlError(
                    f"reload failed, the running configuration keeps serving: {err}") from None
            self._file_config = config
            return {"notes": notes, "services": len(config.services),
                    "config_file": os.path.abspath(self.config_path)}

    # -- commands

    def _cmd_status(self) -> dict:
        # Reads only: no lock, so a change being built does not delay it.
        app = self.appliance
        self._check_open("status")
        balancer = app.balancer
        config = balancer.config if balancer is not None else None
        counters = app.counters() if app.workers else None
        ports = []
        for role, port in zip(("frontend", "backend"), app.ports):
            entry = {"role": role, "port_id": port.port_id, "name": port.name,
                     "driver": port.driver, "tx_cksum_offload": bool(port.tx_cksum_offload)}
            try:
                entry["link"] = port.link()
            except Exception:
                pass
            ports.append(entry)
        return {
            "pid": os.getpid(),
            "uptime_s": (time.monotonic() - app.started_at) if app.started_at else 0.0,
            "engine": app.workers[0].engine if app.workers else None,
            "lcores": [w.lcore_id for w in app.workers],
            "steering": app.handoff.mode if app.handoff is not None else None,
            "ports": ports,
            "control_socket": self.socket_path,
            "services": len(config.services) if config is not None else None,
            "backends": config.backend_count if config is not None else None,
            "flows": _flows_in_tables(counters) if counters and balancer else None,
            "health_checks": _health_summary(app, balancer, config, counters),
            "backends_down": _backends_down(balancer, config),
            **self._saved_state(config),
        }

    def _cmd_service_list(self) -> dict:
        balancer = self._balancer("service.list")
        config, stats = balancer.config_and_stats()
        services = []
        for svc, counters in zip(config.services, stats):
            entry = {"key": str(svc.key), **svc.to_dict()}
            entry["counters"] = {k: counters[k] for k in
                                 ("packets", "bytes", "new_flows", "active_flows")}
            entry["failing_open"] = counters["failing_open"]
            for backend, bstats in zip(entry["backends"], counters["backends"]):
                backend["counters"] = {k: bstats[k] for k in
                                       ("packets", "bytes", "new_flows", "active_flows")}
                backend["state"] = {k: bstats[k] for k in
                                    ("state", "health", "reason", "disabled", "since")}
            services.append(entry)
        return {"services": services, **self._saved_state(config)}

    def _cmd_service_add(self, service: dict) -> dict:
        def edit(config):
            # Validated where it will sit, so messages give its real index.
            return config.with_service_data(service, source="service.add")

        def describe(old, new):
            svc = new.services[-1]
            name = f"{svc.name} ({svc.key})" if svc.name else str(svc.key)
            return f"added service {name} with {_plural(len(svc.backends), 'backend')}"
        return self._change("service.add", edit, describe)

    def _cmd_service_del(self, service: str) -> dict:
        removed = []

        def edit(config):
            removed.append(_find_service(config, "service.del", service))
            return config.without_service(service)

        def describe(old, new):
            svc = removed[0]
            name = f"{svc.name} ({svc.key})" if svc.name else str(svc.key)
            return f"removed service {name}"
        return self._change("service.del", edit, describe)

    def _cmd_backend_add(self, service: str, ip: str, port: int, weight: int = 1) -> dict:
        from rplb.config import Backend

        def edit(config):
            _find_service(config, "backend.add", service)
            # Backend(...) itself checks nothing: with_backend validates ip,
            # port and weight exactly as the services file does.
            # An IPv6 address may come in brackets, as rplbctl shows it.
            address = ip[1:-1] if ip.startswith("[") and ip.endswith("]") else ip
            return config.with_backend(service, Backend(address, port, weight))

        def describe(old, new):
            svc = new.service(service)
            return (f"added backend {_backend_text(ip, port)} (weight {weight}) "
                    f"to {svc.label}")
        return self._change("backend.add", edit, describe)

    def _cmd_backend_del(self, service: str, ip: str, port: int) -> dict:
        def edit(config):
            _find_service(config, "backend.del", service)
            return config.without_backend(service, ip, port)

        def describe(old, new):
            return (f"removed backend {_backend_text(ip, port)} from "
                    f"{new.service(service).label}")
        return self._change("backend.del", edit, describe)

    def _cmd_backend_set_weight(self, service: str, ip: str, port: int, weight: int) -> dict:
        def edit(config):
            _find_service(config, "backend.set-weight", service)
            return config.with_weight(service, ip, port, weight)

        def describe(old, new):
            before = old.service(service).backend(ip, port).weight
            text = (f"{new.service(service).label}: backend {_backend_text(ip, port)} "
                    f"weight {before} -> {weight}")
            if weight == 0:
                text += " (draining: its flows stay, no new ones)"
            return text
        return self._change("backend.set-weight", edit, describe)

    def _cmd_backend_disable(self, service: str, ip: str, port: int) -> dict:
        return self._set_disabled("backend.disable", service, ip, port, True)

    def _cmd_backend_enable(self, service: str, ip: str, port: int) -> dict:
        return self._set_disabled("backend.enable", service, ip, port, False)

    def _set_disabled(self, cmd: str, service: str, ip: str, port: int, disabled: bool) -> dict:
        """A backend's administrative state: run-time state, kept by
        reloads, not written by save (docs/control.md)."""
        from rplb.config import ConfigError
        from rplb.errors import RplbError
        with self._lock:
            balancer = self._balancer(cmd)
            _find_service(balancer.config, cmd, service)
            try:
                message = balancer.set_disabled(service, ip, port, disabled)
            except ConfigError as err:
                raise ControlError(f"{command_label(cmd)}: {err.problem}") from None
            except RplbError as err:
                raise ControlError(f"{command_label(cmd)}: {err}") from None
            reply = {"message": message, "notes": [], **self._saved_state()}
        self._log(f"control: {message}")
        return reply

    def _cmd_flows(self) -> dict:
        from rplb.errors import RplbError
        balancer = self._balancer("flows")
        counters = self.appliance.counters()
        stats = balancer.service_stats()
        try:
            sample, note = balancer.flow_sample(64), None
        except RplbError as err:
            sample, note = None, f"no sample: {err}"
        events = counters["events"]
        return {
            "flows": _flows_in_tables(counters),
            "flows_created": events["flows_created"],
            "flows_expired": events["flows_expired"],
            "flows_moved": events["flows_moved"],
            "flow_table_full": events["flow_table_full"],
            "flow_table_size": balancer.config.flow_table_size,
            "services": [{"service": s["service"], "key": s["key"],
                          "active_flows": s["active_flows"]} for s in stats],
            "sample": sample,
            "sample_note": note,
        }

    def snapshot(self, services_limit: Optional[int] = None) -> dict:
        """appliance.snapshot() (for the Prometheus endpoint and the
        telemetry publisher): consistent with one published configuration,
        and not delayed by a change being built."""
        return self.appliance.snapshot(services_limit)

    def _cmd_stats(self) -> dict:
        self._check_open("stats")
        snapshot = self.appliance.snapshot()
        # The same shape as --stats-json (which also dumps with default=str).
        return {"stats": json.loads(json.dumps(snapshot, default=str))}

    def _cmd_reload(self) -> dict:
        reply = self._reload("reload")
        self._log(f"control: reloaded {self.config_path}: {reply['services']} services")
        for note in reply["notes"]:
            self._log(f"control: reload: {note}")
        return reply

    def _cmd_save(self, path: Optional[str] = None) -> dict:
        from rplb.config import config_form, dump_config
        with self._lock:
            balancer = self._balancer("save")
            if path is None:
                if not self.config_path:
                    raise ControlError("save: rplb-dpdk runs without --config: "
                                       "give the FILE to write")
                path = os.path.abspath(self.config_path)
            elif not os.path.isabs(path):
                raise ControlError(f"save: path {path!r} must be absolute "
                                   "(rplb-dpdk's working directory is not yours)")
            config = balancer.config
            try:
                write_atomically(path, dump_config(config, config_form(path)))
            except OSError as err:
                raise ControlError(f"save: cannot write {path}: "
                                   f"{err.strerror or err}") from None
            if self.config_path and same_file(path, self.config_path):
                self._file_config = config
            reply = {"path": path, "services": len(config.services), **self._saved_state()}
        self._log(f"control: saved the running configuration to {path}")
        return reply


def _find_service(config, cmd: str, ref: str):
    from rplb.config import NotFoundError
    try:
        return config.service(ref)
    except NotFoundError as err:
        raise ControlError(f"{command_label(cmd)}: {err}") from None


def _config_message(cmd: str, err) -> str:
    """A ConfigError from an edit, without the edit method's name as source."""
    where = err.where if err.where and err.where != "services" else ""
    return ": ".join(part for part in (command_label(cmd), where, err.problem) if part)


def _health_summary(app, balancer, config, counters) -> Optional[dict]:
    """The kernel interface and what crossed it, for status (None without
    health_checks)."""
    kernel = getattr(app, "kernel", None)
    if kernel is None or balancer is None or config is None:
        return None
    checked = sum(len(s.backends) for s in config.services if s.health is not None)
    health = getattr(app, "health", None)
    events = counters["events"] if counters else {}
    drops = counters["drops"] if counters else {}
    return {**kernel.describe(), "checked": checked,
            "probes": health.probes if health is not None else 0,
            "to_kernel": events.get("to_kernel", 0), "from_kernel": events.get("from_kernel", 0),
            "kernel_dropped": drops.get("kernel_rate", 0) + drops.get("kernel_full", 0)}


def _backends_down(balancer, config) -> Optional[list]:
    """Every backend that is down (by its check or disabled), with why and
    since when (None without load balancing)."""
    if balancer is None or config is None:
        return None
    from rplb.balancer import ident_text
    by_key = config._summary().by_key
    down = []
    for key, states in balancer.backend_states().items():
        service = by_key.get(key)
        if service is None:
            continue
        for backend, state in states.items():
            if not state.up:
                down.append({"service": service.label,
                             "backend": ident_text(backend, service.family),
                             "health": state.health if service.health is not None else None,
                             "reason": state.reason,
                             "disabled": state.disabled, "since": state.since or None})
    return sorted(down, key=lambda d: (d["since"] or 0, d["service"], d["backend"]))


def _flows_in_tables(counters: dict) -> int:
    events = counters["events"]
    return int(events["flows_created"]) - int(events["flows_expired"])


def _backend_text(ip: str, port: int) -> str:
    """ip:port as the operator reads it: canonical, IPv6 in brackets (ip
    was validated by the edit)."""
    from rplb.config import address_port, parse_address
    return address_port(parse_address(ip), port)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


