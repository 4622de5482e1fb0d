"""The control socket: change and inspect a running rplb-dpdk (rplbctl's server).

A UNIX stream socket (mode 0600, owned by the user running rplb-dpdk;
default ``/run/rplb/rplb.sock``, its directory created 0700) carries one
JSON object per line each way.  A request names a command and its fields::

    {"cmd": "backend.add", "service": "web", "ip": "192.168.1.13", "port": 8080, "weight": 5}

and gets one reply line, ``{"ok": true, ...}`` or
``{"ok": false, "error": "one clear line"}``.  The commands are listed in
:data:`COMMANDS`; docs/control.md describes them.

Every change goes through the same validator as the services file (the
``Config.with_*``/``without_*`` edits) and one :meth:`Balancer.apply`, so it
is applied completely or not at all.  Changes, ``reload`` and SIGHUP are
serialised by one lock of the :class:`Controller`, so an edit is never
computed from a configuration that a concurrent reload has replaced; the
commands that only read (status, service list, flows, stats) do not take
it, so they answer while a large change is being built.

The server is a Python thread of the control plane (plus one short-lived
thread per connection); the fast path never sees it.  This module does not
import DPDK: rplbctl uses :func:`request` from here.
"""

from __future__ import annotations

import json
import os
import select
import socket
import stat
import struct
import sys
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple

DEFAULT_SOCKET = "/run/rplb/rplb.sock"
MAX_REQUEST = 64 * 1024          # bytes in one request line, newline excluded
MAX_CONNECTIONS = 16
IDLE_TIMEOUT = 60.0              # seconds a connection may stay silent

__all__ = ["COMMANDS", "ControlError", "ControlServer", "Controller", "DEFAULT_SOCKET",
           "MAX_REQUEST", "request"]


class ControlError(Exception):
    """One line for the operator (a refused request, or a socket that cannot be set up)."""


# --------------------------------------------------------------------------
# Requests: fields and their types
# --------------------------------------------------------------------------

_TYPES = {"string": str, "integer": int, "object": dict}

#: command -> {field: (type, required)}.  Any other field is refused.
COMMANDS: Dict[str, Dict[str, Tuple[str, bool]]] = {
    "status": {},
    "service.list": {},
    "service.add": {"service": ("object", True)},
    "service.del": {"service": ("string", True)},
    "backend.add": {"service": ("string", True), "ip": ("string", True),
                    "port": ("integer", True), "weight": ("integer", False)},
    "backend.del": {"service": ("string", True), "ip": ("string", True),
                    "port": ("integer", True)},
    "backend.set-weight": {"service": ("string", True), "ip": ("string", True),
                           "port": ("integer", True), "weight": ("integer", True)},
    "flows": {},
    "stats": {},
    "reload": {},
    "save": {"path": ("string", False)},
}


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = repr(value)
        return "string " + (text if len(text) <= 40 else text[:37] + "...")
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _label(cmd: str) -> str:
    """How messages name a command: as rplbctl spells it ("backend add")."""
    return cmd.replace(".", " ")


def parse_request(line: bytes) -> Tuple[str, dict]:
    """(command, fields) of one request line; ControlError when it is not valid."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ControlError("request is not valid UTF-8") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise ControlError("request is not valid JSON: nested too deeply") from None
    except ValueError as err:   # json.JSONDecodeError, or an int over 4300 digits
        detail = err.msg if isinstance(err, json.JSONDecodeError) else str(err)
        where = (f" at column {err.colno}" if isinstance(err, json.JSONDecodeError) else "")
        raise ControlError(f"request is not valid JSON{where}: {detail} "
                           "(send one JSON object per line)") from None
    if not isinstance(data, dict):
        raise ControlError(f"request must be a JSON object, got {_describe(data)}")
    if "cmd" not in data:
        raise ControlError(f"request has no \"cmd\" (commands: {', '.join(COMMANDS)})")
    cmd = data["cmd"]
    if not isinstance(cmd, str):
        raise ControlError(f"\"cmd\" must be a string, got {_describe(cmd)}")
    if cmd not in COMMANDS:
        shown = cmd if len(cmd) <= 40 and cmd.isprintable() else cmd[:37] + "..."
        raise ControlError(f"unknown command {shown!r} (commands: {', '.join(COMMANDS)})")
    spec = COMMANDS[cmd]
    fields = {}
    for name, value in data.items():
        if name == "cmd":
            continue
        if name not in spec:
            allowed = ", ".join(spec) or "none"
            shown = name if len(name) <= 40 and name.isprintable() else name[:37] + "..."
            raise ControlError(f"{_label(cmd)}: unknown field {shown!r} (fields: {allowed})")
        kind, _ = spec[name]
        expected = _TYPES[kind]
        if isinstance(value, bool) or not isinstance(value, expected):
            raise ControlError(f"{_label(cmd)}: field {name!r} must be {'an' if kind[0] in 'aeiou' else 'a'} "
                               f"{kind}, got {_describe(value)}")
        fields[name] = value
    for name, (_, required) in spec.items():
        if required and name not in fields:
            raise ControlError(f"{_label(cmd)}: missing field {name!r}")
    return cmd, fields


# --------------------------------------------------------------------------
# The controller: what each command does to the running appliance
# --------------------------------------------------------------------------


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
            return {"ok": False, "error": _one_line(str(err))}
        except Exception as err:   # a bug: report it, keep serving
            self._log(f"control: internal error: {type(err).__name__}: {err}")
            return {"ok": False, "error": _one_line(
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
            raise ControlError(f"{_label(cmd)}: rplb-dpdk is stopping")

    def _balancer(self, cmd: str):
        self._check_open(cmd)
        balancer = self.appliance.balancer
        if balancer is None:
            raise ControlError(
                f"{_label(cmd)}: load balancing is off (rplb-dpdk runs the pass-through engine, "
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
                raise ControlError(f"{_label(cmd)}: {err}") from None
            try:
                notes = balancer.apply(new)
            except (ConfigError, RplbError) as err:
                raise ControlError(f"{_label(cmd)}: {err}") from None
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
            from rplb.balancer import quiet_gc
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
            "ports": ports,
            "control_socket": self.socket_path,
            "services": len(config.services) if config is not None else None,
            "backends": config.backend_count if config is not None else None,
            "flows": _flows_in_tables(counters) if counters and balancer else None,
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
            for backend, bstats in zip(entry["backends"], counters["backends"]):
                backend["counters"] = {k: bstats[k] for k in
                                       ("packets", "bytes", "new_flows", "active_flows")}
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
            return config.with_backend(service, Backend(ip, port, weight))

        def describe(old, new):
            svc = new.service(service)
            return f"added backend {ip}:{port} (weight {weight}) to {svc.label}"
        return self._change("backend.add", edit, describe)

    def _cmd_backend_del(self, service: str, ip: str, port: int) -> dict:
        def edit(config):
            _find_service(config, "backend.del", service)
            return config.without_backend(service, ip, port)

        def describe(old, new):
            return f"removed backend {ip}:{port} from {new.service(service).label}"
        return self._change("backend.del", edit, describe)

    def _cmd_backend_set_weight(self, service: str, ip: str, port: int, weight: int) -> dict:
        def edit(config):
            _find_service(config, "backend.set-weight", service)
            return config.with_weight(service, ip, port, weight)

        def describe(old, new):
            before = old.service(service).backend(ip, port).weight
            text = f"{new.service(service).label}: backend {ip}:{port} weight {before} -> {weight}"
            if weight == 0:
                text += " (draining: its flows stay, no new ones)"
            return text
        return self._change("backend.set-weight", edit, describe)

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
                _write_atomically(path, dump_config(config, config_form(path)))
            except OSError as err:
                raise ControlError(f"save: cannot write {path}: "
                                   f"{err.strerror or err}") from None
            if self.config_path and _same_file(path, self.config_path):
                self._file_config = config
            reply = {"path": path, "services": len(config.services), **self._saved_state()}
        self._log(f"control: saved the running configuration to {path}")
        return reply


def _find_service(config, cmd: str, ref: str):
    from rplb.config import NotFoundError
    try:
        return config.service(ref)
    except NotFoundError as err:
        raise ControlError(f"{_label(cmd)}: {err}") from None


def _config_message(cmd: str, err) -> str:
    """A ConfigError from an edit, without the edit method's name as source."""
    where = err.where if err.where and err.where != "services" else ""
    return ": ".join(part for part in (_label(cmd), where, err.problem) if part)


def _flows_in_tables(counters: dict) -> int:
    events = counters["events"]
    return int(events["flows_created"]) - int(events["flows_expired"])


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _write_atomically(path: str, text: str) -> None:
    """Write text to path by rename, keeping the mode of a file it replaces."""
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = 0o644
    tmp = os.path.join(directory, f".{os.path.basename(target)}.rplb-{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# --------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------


def _peer_credentials(sock: socket.socket) -> Tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a UNIX socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", raw)


class ControlServer:
    """The listening socket and its threads.

    bind() early (before EAL: it fails fast when another rplb owns the
    path), start(controller) once the appliance runs, close() before the
    workers stop (always; it is idempotent).
    """

    def __init__(self, path: str, log: Callable[[str], None] = None):
        self.path = os.path.abspath(path)
        self._log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self._sock: Optional[socket.socket] = None
        self._identity: Optional[Tuple[int, int]] = None   # (st_dev, st_ino) of our socket
        self._controller: Optional[Controller] = None
        self._thread: Optional[threading.Thread] = None
        self._wake_r, self._wake_w = None, None
        self._stopping = threading.Event()
        self._connections: Dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()

    # -- setup

    def bind(self) -> None:
        """Create the socket file (mode 0600); ControlError says why it cannot."""
        where = f"--control-socket {self.path}"
        directory = os.path.dirname(self.path)
        if len(os.fsencode(self.path)) > 107:
            raise ControlError(f"{where}: the path is too long for a UNIX socket "
                               "(at most 107 bytes): choose a shorter one")
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as err:
            raise ControlError(f"{where}: cannot create the directory {directory}: "
                               f"{err.strerror or err}") from None
        self._remove_stale(where)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        # The umask makes bind() create the file 0600 from the start (no
        # window where another user could connect).  This runs before EAL
        # starts its threads, so changing the process umask is safe here.
        previous = os.umask(0o177)
        try:
            sock.bind(self.path)
        except OSError as err:
            sock.close()
            raise ControlError(f"{where}: cannot bind: {err.strerror or err}") from None
        finally:
            os.umask(previous)
        try:
            os.chmod(self.path, 0o600)
            st = os.stat(self.path)
            sock.listen(MAX_CONNECTIONS)
        except OSError as err:
            sock.close()
            raise ControlError(f"{where}: {err.strerror or err}") from None
        self._identity = (st.st_dev, st.st_ino)
        self._sock = sock

    def _remove_stale(self, where: str) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        except OSError as err:
            raise ControlError(f"{where}: {err.strerror or err}") from None
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(f"{where}: the path exists and is not a socket; "
                               "remove it or choose another path")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        probe.settimeout(2.0)
        try:
            probe.connect(self.path)
        except (ConnectionRefusedError, FileNotFoundError):
            # Nobody listens: left by a process that died.  Replace it.
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            except OSError as err:
                raise ControlError(f"{where}: cannot remove the stale socket: "
                                   f"{err.strerror or err}") from None
            return
        except OSError as err:
            raise ControlError(f"{where}: the socket exists and cannot be checked "
                               f"({err.strerror or err}); remove it if no rplb uses it") from None
        else:
            try:
                pid = f" (pid {_peer_credentials(probe)[0]})"
            except OSError:
                pid = ""
            raise ControlError(f"{where}: another rplb-dpdk is running and listening there"
                               f"{pid}; stop it, or give this one its own --control-socket "
                               "PATH (or --control-socket none)")
        finally:
            probe.close()

    def start(self, controller: Controller) -> None:
        if self._sock is None:
            raise ControlError("control socket: bind() first")
        self._controller = controller
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._accept_loop, name="rplb-control",
                                        daemon=True)
        self._thread.start()

    # -- run time

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                ready, _, _ = select.select([self._sock, self._wake_r], [], [])
            except (OSError, ValueError):
                return
            if self._wake_r in ready or self._stopping.is_set():
                return
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            try:
                self._admit(conn)
            except Exception as err:      # never let one client end the server
                self._log(f"control: {type(err).__name__}: {err}")
                conn.close()

    def _admit(self, conn: socket.socket) -> None:
        conn.settimeout(IDLE_TIMEOUT)
        try:
            pid, uid, _ = _peer_credentials(conn)
        except OSError:
            conn.close()
            return
        # The 0600 mode already keeps other users out; this also refuses
        # them if the socket's mode was changed by hand.
        if uid not in (os.geteuid(), 0):
            _send(conn, {"ok": False, "error": f"permission denied: uid {uid} may not "
                         f"control this rplb-dpdk (only uid {os.geteuid()} and root)"})
            conn.close()
            return
        with self._connections_lock:
            if len(self._connections) >= MAX_CONNECTIONS:
                _send(conn, {"ok": False, "error": f"too many control connections "
                                                   f"(at most {MAX_CONNECTIONS}): try again"})
                conn.close()
                return
            thread = threading.Thread(target=self._serve_connection, args=(conn,),
                                      name="rplb-control-conn", daemon=True)
            self._connections[conn] = thread
        thread.start()

    def _serve_connection(self, conn: socket.socket) -> None:
        buffer = b""
        try:
            while not self._stopping.is_set():
                try:
                    chunk = conn.recv(65536)
                except (socket.timeout, OSError):
                    return                       # idle too long, or the client went away
                if not chunk:
                    # EOF: a last request without its newline still counts if
                    # it is complete; a half-sent one gets its error (which the
                    # client, gone, may never read).
                    if buffer.strip():
                        self._reply(conn, buffer)
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if len(line) > MAX_REQUEST:
                        self._oversized(conn)
                        return
                    if line.strip() and not self._reply(conn, line):
                        return
                if len(buffer) > MAX_REQUEST:
                    self._oversized(conn)
                    return
        finally:
            with self._connections_lock:
                self._connections.pop(conn, None)
            try:
                conn.close()
            except OSError:
                pass

    def _oversized(self, conn: socket.socket) -> None:
        _send(conn, {"ok": False, "error": f"request too large: over {MAX_REQUEST} bytes "
                                           "without a newline (one JSON object per line)"})
        # Closing with unread input would make the kernel drop our reply
        # for some clients: say we are done writing, then drain briefly.
        try:
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(0.5)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and conn.recv(65536):
                pass
        except OSError:
            pass

    def _reply(self, conn: socket.socket, line: bytes) -> bool:
        return _send(conn, self._controller.handle_line(line.rstrip(b"\r")))

    # -- stop

    def close(self) -> None:
        """Stop accepting, end the connections, remove the socket file (if ours)."""
        self._stopping.set()
        if self._controller is not None:
            self._controller.close()
        if self._wake_w is not None:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._connections_lock:
            connections = list(self._connections.items())
        for conn, _ in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _, thread in connections:
            thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            try:
                st = os.lstat(self.path)
                if (st.st_dev, st.st_ino) == self._identity:
                    os.unlink(self.path)
            except OSError:
                pass
        for fd in (self._wake_r, self._wake_w):
            if fd is not None:
                os.close(fd)
        self._wake_r = self._wake_w = None


def _send(conn: socket.socket, reply: dict) -> bool:
    try:
        conn.sendall((json.dumps(reply, default=str) + "\n").encode())
        return True
    except (socket.timeout, OSError):
        return False


# --------------------------------------------------------------------------
# The client side
# --------------------------------------------------------------------------


def request(path: str, req: dict, timeout: float = 30.0) -> dict:
    """Send one request to the control socket at path and return the reply.

    Raises ControlError when the socket cannot be reached or the reply is
    not one JSON object (the request's own errors come back as a reply with
    ``ok`` false).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise ControlError(f"cannot connect to {path}: no such socket (is rplb-dpdk "
                               "running, with this --control-socket?)") from None
        except ConnectionRefusedError:
            raise ControlError(f"cannot connect to {path}: connection refused (rplb-dpdk "
                               "is not running; the socket file is stale)") from None
        except PermissionError:
            raise ControlError(f"cannot connect to {path}: permission denied (the socket "
                               "belongs to the user running rplb-dpdk)") from None
        except socket.timeout:
            raise ControlError(f"cannot connect to {path}: timed out") from None
        except OSError as err:
            raise ControlError(f"cannot connect to {path}: {err.strerror or err}") from None
        try:
            sock.sendall((json.dumps(req) + "\n").encode())
        except BrokenPipeError:
            pass               # refused early: its reply may still be waiting to be read
        except OSError as err:
            raise ControlError(f"{path}: cannot send the request: {err.strerror or err}") from None
        data = b""
        try:
            while b"\n" not in data:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            raise ControlError(f"{path}: no reply within {timeout:g} s") from None
        except OSError as err:
            if not data:
                raise ControlError(f"{path}: {err.strerror or err}") from None
    finally:
        sock.close()
    if not data:
        raise ControlError(f"{path}: the connection closed without a reply")
    try:
        reply = json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        raise ControlError(f"{path}: the reply is not JSON (is this rplb's control "
                           "socket?)") from None
    if not isinstance(reply, dict) or "ok" not in reply:
        raise ControlError(f"{path}: unexpected reply {data[:80]!r}")
    return reply
