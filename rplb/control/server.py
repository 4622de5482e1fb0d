"""The control socket's server: a UNIX stream socket (mode 0600, owned by
the user running rplb-dpdk; a missing directory is created 0700, and
rplb-dpdk lets that happen only for the default /run/rplb) and its
threads.

The server is a Python thread of the control plane (plus one short-lived
thread per connection); the fast path never sees it.  Each request line
goes to the :class:`~rplb.control.commands.Controller`.
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
from typing import Callable, Dict, Optional, Tuple

from rplb.control.commands import Controller
from rplb.control.protocol import MAX_REQUEST, ControlError

MAX_CONNECTIONS = 16
IDLE_TIMEOUT = 60.0              # seconds a connection may stay silent

__all__ = ["ControlServer", "IDLE_TIMEOUT", "MAX_CONNECTIONS"]


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

