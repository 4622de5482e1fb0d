"""rplb under systemd: installing rplb.service with an example /etc/rplb/,
and telling systemd how the service is doing (Type=notify).

``rplb-dpdk --install-service [--root DIR]`` writes

    /etc/systemd/system/rplb.service   ExecStart: this rplb-dpdk (its venv)
    /etc/rplb/rplb.env                 EAL and rplb options, hugepages
    /etc/rplb/services.yaml            an example services file

and never replaces a file that exists: an operator's edits survive a
reinstall (a file is created next to its final name and linked into place,
which fails, instead of overwriting, if the name was taken meanwhile).
The templates are rplb/systemd/.
"""

from __future__ import annotations

import os
import socket
import sysconfig
from pathlib import Path
from typing import List, Optional, Tuple

TEMPLATES = Path(__file__).resolve().parent / "systemd"
UNIT_PATH = "etc/systemd/system/rplb.service"
ENV_PATH = "etc/rplb/rplb.env"
SERVICES_PATH = "etc/rplb/services.yaml"


class InstallError(Exception):
    """One line for the operator."""


def rplb_dpdk_path() -> str:
    """The rplb-dpdk script of the Python environment running this (the
    checkout's venv), which the unit must start: never a symlink on PATH
    that another checkout may re-point."""
    return os.path.join(sysconfig.get_path("scripts"), "rplb-dpdk")


def render_unit(rplb_dpdk: str) -> str:
    return (TEMPLATES / "rplb.service.in").read_text().replace("@RPLB_DPDK@", rplb_dpdk)


def install(root: str = "/", rplb_dpdk: Optional[str] = None) -> List[Tuple[str, str]]:
    """Install the unit and /etc/rplb under root; returns [(path, "installed"
    | "kept")].  Raises InstallError (nothing is overwritten, ever)."""
    rplb_dpdk = rplb_dpdk or rplb_dpdk_path()
    if not os.access(rplb_dpdk, os.X_OK):
        raise InstallError(f"{rplb_dpdk} is not an executable rplb-dpdk: run "
                           "--install-service with the rplb-dpdk of the install to use "
                           "(e.g. .venv/bin/rplb-dpdk --install-service)")
    files = [(UNIT_PATH, render_unit(rplb_dpdk), 0o644),
             (ENV_PATH, (TEMPLATES / "rplb.env").read_text(), 0o644),
             (SERVICES_PATH, (TEMPLATES / "services.yaml").read_text(), 0o644)]
    done = []
    for relative, text, mode in files:
        path = os.path.join(root, relative)
        done.append((path, "installed" if _create(path, text, mode) else "kept"))
    return done


def _create(path: str, text: str, mode: int) -> bool:
    """Create path with text unless it exists; True if created."""
    if os.path.lexists(path):
        return False
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.new")
        with open(temporary, "w") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        try:
            os.link(temporary, path)     # fails if path appeared meanwhile
        except FileExistsError:
            return False
        finally:
            os.unlink(temporary)
    except OSError as err:
        raise InstallError(f"cannot write {path}: {err.strerror or err}") from None
    return True


def notify(*states: str) -> bool:
    """Send sd_notify states (e.g. "READY=1", "STATUS=...") to systemd when
    it asked for them (NOTIFY_SOCKET); never blocks.  False outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):              # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto("\n".join(states).encode(), address)
    except OSError:
        return False
    return True
