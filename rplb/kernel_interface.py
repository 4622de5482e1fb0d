"""The appliance's own network interface on the backend network: the kernel
side of DPDK's exception path, from which the health checks probe.

rplb makes it itself when the services file has ``health_checks`` (the
operator adds no EAL argument): it hot-plugs a ``net_tap`` virtual device
(DPDK's TAP PMD, which creates a kernel interface and exchanges frames
with it), sets it up with one queue pair per worker, gives the kernel
interface the configured address (rtnetlink, rplb.netlink) and brings it
up.  The fast path then hands it what the backend network sends to that
address and sends what it sends out of the backend port
(docs/fastpath.md, "The exception path").  close() removes the device, and
with it the kernel interface; the kernel interface also goes when the
process dies (it is not persistent).
"""

from __future__ import annotations

import os
from typing import Optional

from rplb import dataplane, netlink
from rplb.config import HealthChecks
from rplb.errors import RplbError

__all__ = ["KernelInterface", "KernelInterfaceError", "VDEV_NAME", "DESCRIPTORS"]

#: The DPDK device's name (net_tap's driver takes any name it prefixes).
VDEV_NAME = "net_tap_rplb"
#: Descriptors per queue: what the kernel interface may hold in flight per
#: worker.  Frames to the kernel are few (health checks' replies, ARP,
#: pings), and each costs a system call, so the rate limit bounds them;
#: these only need to cover a burst.
DESCRIPTORS = 256
#: Frames that may reach the kernel at once, over the rate (the rate
#: limit's burst, per worker).
KERNEL_BURST = 64


class KernelInterfaceError(Exception):
    """The interface cannot be made as configured; the message says what to change."""


class KernelInterface:
    """open() makes the interface; close() (always, idempotent) removes it."""

    def __init__(self, settings: HealthChecks, queues: int):
        self.settings = settings
        self.name = settings.interface
        self.queues = queues
        self.port: Optional[dataplane.Port] = None
        self._plugged = False

    def open(self, pool) -> None:
        """Raises KernelInterfaceError (a mistake to fix: the name is taken)
        or RplbError (DPDK or the kernel refused); what was made is undone
        by close()."""
        where = f"health_checks.interface {self.name}"
        if os.path.exists(f"/sys/class/net/{self.name}"):
            raise KernelInterfaceError(
                f"{where}: a network interface of that name exists already (another rplb? "
                "see `ip link show`): give health_checks an interface name of its own")
        try:
            port_id = dataplane.vdev_add(VDEV_NAME, f"iface={self.name}",
                                         quiet_log_type="pmd.net.tap")
        except RplbError as err:
            raise RplbError(err.errno, f"{where}: cannot create its net_tap device ({err}): "
                                       "it needs /dev/net/tun and CAP_NET_ADMIN") from None
        self._plugged = True
        self.port = dataplane.Port(port_id)
        # Before it comes up: no IPv6 router solicitations or neighbour
        # discovery onto the backend network, which rplb speaks IPv4 to.
        netlink.disable_ipv6(self.name)
        self.port.configure(pool, DESCRIPTORS, DESCRIPTORS, allow_tx_cksum_offload=False,
                            queues=self.queues)
        try:
            netlink.add_address(self.name, self.settings.source)
        except netlink.NetlinkError as err:
            raise RplbError(err.errno, f"{where}: {err.strerror}") from None
        # Not promiscuous: the kernel keeps only frames for its own MAC
        # (and broadcasts), as any host on the backend network does.
        self.port.start(promiscuous=False)
        try:
            netlink.set_up(self.name)
        except netlink.NetlinkError as err:
            raise RplbError(err.errno, f"{where}: {err.strerror}") from None

    @property
    def address(self):
        return self.settings.source.ip

    def describe(self) -> dict:
        return {"interface": self.name, "source": str(self.settings.source),
                "port_id": self.port.port_id if self.port is not None else None,
                "queues": self.queues, "kernel_rate": self.settings.kernel_rate}

    def close(self) -> None:
        """Stop and close its port, remove the device (and the kernel
        interface).  Call after the workers stopped."""
        errors = []
        if self.port is not None:
            try:
                self.port.close()
            except RplbError as err:
                errors.append(err)
            self.port = None
        if self._plugged:
            self._plugged = False
            try:
                dataplane.vdev_remove(VDEV_NAME)
            except RplbError as err:
                errors.append(err)
        if errors:
            raise errors[0]
