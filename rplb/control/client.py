"""The control socket's client side: one request, one reply (rplbctl uses
it; it imports no DPDK)."""

from __future__ import annotations

import json
import socket

from rplb.control.protocol import ControlError

__all__ = ["request"]


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
