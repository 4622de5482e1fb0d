"""The services file: parse, validate, edit and write rplb's configuration.

The services file is YAML::

    flow_table_size: 1048576        # flows per worker lcore
    maglev_table_size: 65537        # optional: every service's Maglev table size
    tables_memory_mb: 512           # what all load-balancing tables may take
    timeouts: {tcp: 300, udp: 60}   # idle seconds (also tcp_syn, tcp_fin)
    strict: false                   # drop client traffic to backend addresses
    fragments: {datagrams: 4096, held: 1024, timeout: 5}   # IPv4 and IPv6 fragments, per worker
    health_checks:                  # optional: the appliance's own address
      source: 192.168.1.2/24        #   on the backend network, for health checks
    services:
      - name: web                   # optional, unique
        vip: 10.0.0.100
        proto: tcp
        port: 80
        maglev_table_size: 4099     # optional, this service's own size
        health: {type: http, path: /healthz, expect: [200], interval: 1}
        backends:
          - {ip: 192.168.1.10, port: 8080, weight: 10}
      - {name: web6, vip: "fd00::100", proto: tcp, port: 80,     # IPv6: the same
         backends: [{ip: "fd00:1::10", port: 8080, weight: 10}]}

A service is IPv4 or IPv6: its backends are in its VIP's address family
(NAT64/NAT46 are out of scope).  Addresses are kept and written in
canonical form (ipaddress's: ``fd00::100``, not ``FD00:0::0100``), and an
IPv6 address written with a port takes brackets, as in URLs:
``[fd00::100]:tcp:80``, ``[fd00:1::10]:8080`` (:func:`address_port`).
IPv6 services take no health check yet: the appliance's own kernel
interface has an IPv4 address only.

A service's Maglev table size is its own ``maglev_table_size``, else the
file's, else derived from its backend count (:func:`default_maglev_table_size`).
The tables all services need together are checked against
``tables_memory_mb``.

Every value is checked by one validator, the ``_Checker`` behind
:func:`parse_config`; every way of obtaining a :class:`Config` (loading a
file, the ``with_*``/``without_*`` edit methods) goes through it, so a
``Config`` produced by this module is always valid.  An edit validates the
service it changes and the totals, not the whole file again: its cost does
not grow with the number of services.  Errors are :class:`ConfigError`,
whose message names the file, the service and the field, on one line.

No DPDK is initialised here: the limits come from the C headers through
rplb.contract (which loads the compiled extension), so a file is validated
before anything touches DPDK.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import ipaddress
import json
import numbers
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from functools import lru_cache
from typing import Any, Dict, NamedTuple, NoReturn, Optional, Tuple, Union

import yaml

__all__ = [
    "Backend",
    "Config",
    "ConfigError",
    "Fragments",
    "Health",
    "HealthChecks",
    "NotFoundError",
    "Service",
    "ServiceKey",
    "Timeouts",
    "address_port",
    "config_form",
    "default_maglev_table_size",
    "dump_config",
    "load_config",
    "parse_config",
    "parse_address",
    "parse_service_key",
    "split_address",
    "DEFAULT_FLOW_TABLE_SIZE",
    "DEFAULT_TABLES_MEMORY_MB",
    "MAX_BACKENDS",
    "MAX_FLOW_TABLE_SIZE",
    "MAX_FRAGMENT_DATAGRAMS",
    "MAX_FRAGMENT_HELD",
    "MAX_FRAGMENT_TIMEOUT",
    "MAX_MAGLEV_TABLE_SIZE",
    "MAX_SERVICES",
    "MAX_TABLES_MEMORY_MB",
    "MAX_TIMEOUT",
    "MAX_WEIGHT",
    "MIN_MAGLEV_TABLE_SIZE",
    "PROTOCOLS",
    "HEALTH_CHECK_TYPES",
    "DEFAULT_KERNEL_INTERFACE",
    "DEFAULT_KERNEL_RATE",
]

DEFAULT_FLOW_TABLE_SIZE = 1 << 20
MAX_NAME_LENGTH = 63
# What the load-balancing tables may take at most, MiB: two table
# generations (the one serving and the one being published) and two of
# every Maglev table (a reload that changes every service rebuilds them).
DEFAULT_TABLES_MEMORY_MB = 512
MAX_TABLES_MEMORY_MB = 1 << 20
# A derived Maglev table has at least this many entries per backend (the
# Maglev paper: within about 1 % of the weights' shares), and sizes step
# from the first prime above _MAGLEV_LADDER_BASE, doubling.
MAGLEV_ENTRIES_PER_BACKEND = 100
_MAGLEV_LADDER_BASE = 1000

# The limits the fast path imposes come from its headers (csrc/stats.h,
# rplb.h) through rplb.contract, which loads the compiled extension and
# numpy: loaded at first use, not at import, so `import rplb` stays light
# (and starts no thread: rplb-dpdk blocks its signals first).
_CONTRACT_LIMITS = {
    "MAX_FLOW_TABLE_SIZE": "MAX_FLOW_TABLE_SIZE",
    "MIN_MAGLEV_TABLE_SIZE": "MAGLEV_MIN_SIZE",
    "MAX_MAGLEV_TABLE_SIZE": "MAGLEV_MAX_SIZE",
    "MAX_SERVICES": "MAX_SERVICES",
    "MAX_BACKENDS": "MAX_BACKENDS",      # in total, over all services
    "MAX_TIMEOUT": "MAX_TIMEOUT",
    "MAX_WEIGHT": "MAX_WEIGHT",
    # IPv4 and IPv6 fragments, per worker (csrc/fragment_table.h)
    "MAX_FRAGMENT_DATAGRAMS": "MAX_FRAGMENT_DATAGRAMS",
    "MAX_FRAGMENT_HELD": "MAX_FRAGMENT_HELD",
    "MAX_FRAGMENT_TIMEOUT": "MAX_FRAGMENT_TIMEOUT",
}


_contract_module = None


def _contract():
    global _contract_module
    if _contract_module is None:
        from rplb import contract
        _contract_module = contract
    return _contract_module


@lru_cache(maxsize=None)
def _limit(name: str) -> int:
    return getattr(_contract(), _CONTRACT_LIMITS[name])


def __getattr__(name: str) -> int:
    """MAX_SERVICES and the other limits, read from the C side on first use."""
    if name in _CONTRACT_LIMITS:
        return _limit(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
PROTOCOLS = ("tcp", "udp")
HEALTH_CHECK_TYPES = ("tcp", "http", "udp")
ON_DOWN = ("keep", "reset")
ON_ALL_DOWN = ("open", "drop")
#: The appliance's own kernel interface on the backend network, unless
#: health_checks.interface names another.
DEFAULT_KERNEL_INTERFACE = "rplb0"
#: Frames per second each worker hands that interface at most (health
#: checks' replies, ARP, pings): a flood to the appliance's address beyond
#: it is dropped and counted, so it costs forwarding at most that many
#: system calls a second.
DEFAULT_KERNEL_RATE = 20000
MAX_KERNEL_RATE = 1_000_000
# Linux's IFNAMSIZ less its terminating zero; and the characters a net_tap
# device argument can carry (no ',' or '=').
MAX_INTERFACE_NAME = 15
_INTERFACE_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
# Health check limits: seconds, counts, bytes.
MIN_INTERVAL, MAX_INTERVAL = 0.1, 3600.0
MIN_TIMEOUT = 0.05
MAX_RISE_FALL = 100
MAX_PATH = 1024
MAX_EXPECT = 32
MAX_UDP_PAYLOAD = 1024

_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
# Four decimal octets without leading zeros (which ipaddress refuses).
_DOTTED_QUAD = re.compile(r"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}")


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


class ConfigError(ValueError):
    """An invalid services file, service key or edit.

    ``str(err)`` is one line, ``"<source>: <where>: <problem>"`` (``<where>``
    is left out when the problem concerns the whole file, e.g. a YAML syntax
    error).  ``where`` is the field path for people, with the service named:
    ``"services[1] (dns): backends[0].port"``; ``field`` is the same path for
    programs: ``"services[1].backends[0].port"``.
    """

    def __init__(self, source: str, field: str, problem: str,
                 where: Optional[str] = None) -> None:
        self.source = _one_line(source)
        self.field = field
        self.problem = _one_line(problem)
        self.where = _one_line(field if where is None else where)
        super().__init__(": ".join(
            part for part in (self.source, self.where, self.problem) if part))

    def __reduce__(self) -> Any:
        # The default would call ConfigError(message) on unpickling.
        return (type(self), (self.source, self.field, self.problem, self.where))


class NotFoundError(KeyError):
    """A lookup of a service or backend that is not in the configuration.

    A ``KeyError`` whose ``str()`` is the plain message (``KeyError`` itself
    would print it quoted, as if it were the missing key).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------
# Configuration objects
# --------------------------------------------------------------------------


Address = Union[IPv4Address, IPv6Address]


def address_port(address: Address, port: Any) -> str:
    """``ip:port``, the address in brackets when it is IPv6 (as in URLs and
    ipvsadm): ``"10.0.0.1:80"``, ``"[fd00::1]:80"``.  ``port`` may be any
    suffix (``"tcp:80"``)."""
    if address.version == 6:
        return f"[{address}]:{port}"
    return f"{address}:{port}"


class ServiceKey(NamedTuple):
    """What identifies a service: ``str(key)`` is ``"10.0.0.100:tcp:80"``,
    or ``"[fd00::100]:tcp:80"`` for an IPv6 VIP."""

    vip: Address
    proto: str
    port: int

    def __str__(self) -> str:
        return address_port(self.vip, f"{self.proto}:{self.port}")


@dataclass(frozen=True)
class Backend:
    """One real server behind a service.  ``weight`` 0 drains it."""

    ip: Address
    port: int
    weight: int = 1

    @property
    def key(self) -> Tuple[Address, int]:
        """``(ip, port)``: unique within a service."""
        return (self.ip, self.port)

    @functools.cached_property
    def label(self) -> str:
        """``ip:port``, ``[ip]:port`` for IPv6 (made once: counters name
        every backend often)."""
        if isinstance(self.ip, str):    # not validated yet (an edit's input)
            return f"{self.ip}:{self.port}"
        return address_port(self.ip, self.port)

    def __str__(self) -> str:
        return self.label

    def to_dict(self) -> dict:
        """The backend as it is written in the services file."""
        return {"ip": str(self.ip), "port": self.port, "weight": self.weight}


@dataclass(frozen=True)
class Service:
    """A virtual service ``vip:proto:port`` and the backends serving it.

    With no backends the service exists but new flows to it are dropped.
    """

    vip: Address
    proto: str
    port: int
    backends: Tuple[Backend, ...] = ()
    name: Optional[str] = None
    #: Entries of its Maglev table; None: the file's maglev_table_size, or
    #: derived from the backend count (Config.maglev_size).
    maglev_table_size: Optional[int] = None
    #: Its health check; None: its backends are not checked (always up,
    #: unless disabled).
    health: Optional[Health] = None

    @property
    def key(self) -> ServiceKey:
        return ServiceKey(self.vip, self.proto, self.port)

    @property
    def label(self) -> str:
        """How messages name the service: its name, else ``vip:proto:port``."""
        return self.name if self.name is not None else str(self.key)

    @property
    def family(self) -> int:
        """4 or 6: its VIP's address family, which its backends share."""
        return self.vip.version

    def backend(self, ip: Union[Address, str], port: int) -> Backend:
        """The backend ``ip:port`` (ip: an address, or its text in any
        spelling, IPv6 with or without brackets).

        Raises NotFoundError (a KeyError) if the service has no such backend,
        including when ``ip`` is not an IP address at all.
        """
        return self.backends[self._backend_index(ip, port)]

    def _backend_index(self, ip: Union[Address, str], port: int) -> int:
        address = _lookup_address(ip)
        if address is None:
            raise NotFoundError(
                f"service {self.label} has no backend {ip}:{port}") from None
        for index, backend in enumerate(self.backends):
            if backend.key == (address, port):
                return index
        raise NotFoundError(
            f"service {self.label} has no backend {address_port(address, port)}")

    def to_dict(self) -> dict:
        """The service as it is written in the services file."""
        data: dict = {} if self.name is None else {"name": self.name}
        data.update(vip=str(self.vip), proto=self.proto, port=self.port)
        if self.maglev_table_size is not None:
            data["maglev_table_size"] = self.maglev_table_size
        if self.health is not None:
            data["health"] = self.health.to_dict()
        data["backends"] = [backend.to_dict() for backend in self.backends]
        return data


@dataclass(frozen=True)
class Timeouts:
    """Idle seconds after which a flow is forgotten.

    ``tcp_syn`` and ``tcp_fin`` apply to TCP flows that are still opening or
    already closing, once the dataplane ages TCP flows by state.
    """

    tcp: int = 300
    udp: int = 60
    tcp_syn: int = 10
    tcp_fin: int = 10


@dataclass(frozen=True)
class Fragments:
    """What each worker keeps of IPv4 and IPv6 datagrams in fragments (rplb
    translates them fragment by fragment: docs/fastpath.md, 3.1 and 3.2; one
    table per worker holds both families, within these bounds).

    ``datagrams``: datagrams tracked at once; a new one replaces the oldest
    when they are all taken.  ``held``: fragments held until their
    datagram's first fragment comes (each an mbuf out of the pool: rplb-dpdk
    checks that ``--mbufs`` covers them); 0 drops such fragments.
    ``timeout``: seconds after which an incomplete datagram is forgotten and
    its held fragments freed.  The defaults are the C side's
    (tests/test_contract.py compares them).
    """

    datagrams: int = 4096
    held: int = 1024
    timeout: int = 5


@dataclass(frozen=True)
class Health:
    """A service's health check, and what its results do.

    ``type`` tcp: a connection to the backend succeeds; http: a GET of
    ``path`` answers with a status in ``expect``; udp: ``payload`` sent,
    a datagram containing ``reply`` comes back.  ``port``: None checks each
    backend's own port.  Every ``interval`` seconds, within ``timeout``;
    ``rise`` successes in a row bring a down backend up, ``fall`` failures
    take an up one down.  ``on_down``: keep (its flows continue) or reset
    (they move to the backends that are up).  ``on_all_down``: open (every
    backend serves again, as if none were down) or drop (new flows are
    dropped).
    """

    type: str = "tcp"
    port: Optional[int] = None
    path: str = "/"
    expect: Tuple[int, ...] = (200,)
    payload: Optional[str] = None
    reply: Optional[str] = None
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 2
    on_down: str = "keep"
    on_all_down: str = "open"

    def to_dict(self) -> dict:
        """The check as it is written in the services file (the keys of
        other types left out)."""
        data: dict = {"type": self.type}
        if self.port is not None:
            data["port"] = self.port
        if self.type == "http":
            data.update(path=self.path, expect=list(self.expect))
        if self.type == "udp":
            data.update(payload=self.payload, reply=self.reply)
        data.update(interval=_number_text(self.interval), timeout=_number_text(self.timeout),
                    rise=self.rise, fall=self.fall, on_down=self.on_down,
                    on_all_down=self.on_all_down)
        return data


@dataclass(frozen=True)
class HealthChecks:
    """The appliance's own address on the backend network (top-level
    ``health_checks``): rplb gives it a kernel interface of its own,
    ``interface``, with address ``source`` (an ``IPv4Interface``,
    address/prefix), and checks the backends from it.  ``kernel_rate``:
    frames per second each worker hands that interface at most.
    """

    source: ipaddress.IPv4Interface
    interface: str = DEFAULT_KERNEL_INTERFACE
    kernel_rate: int = DEFAULT_KERNEL_RATE

    def to_dict(self) -> dict:
        return {"source": str(self.source), "interface": self.interface,
                "kernel_rate": self.kernel_rate}


def _number_text(value: float):
    """1.0 as 1 (as people write it), 0.5 as 0.5."""
    return int(value) if float(value).is_integer() else value


ServiceRef = Union[ServiceKey, str]
"""A service named by its key, its key as text (``"10.0.0.100:tcp:80"``) or its name."""


@dataclass(frozen=True)
class Config:
    """The whole services file.

    Build it with :func:`parse_config`/:func:`load_config` and change it with
    the ``with_*``/``without_*`` methods, which return a new, validated
    ``Config`` (checking the service they change and the totals, in time
    independent of the number of services).  (Calling the constructor
    directly validates nothing.)
    """

    services: Tuple[Service, ...] = ()
    flow_table_size: int = DEFAULT_FLOW_TABLE_SIZE
    #: Every service's Maglev table size, unless the service sets its own;
    #: None: derived per service from its backend count.
    maglev_table_size: Optional[int] = None
    timeouts: Timeouts = Timeouts()
    # Drop IPv4 arriving on the frontend for a backend address, so the backend
    # network is not reachable through the balancer.  Off by default: the
    # service forwards traffic that is not for a service unchanged.
    strict: bool = False
    tables_memory_mb: int = DEFAULT_TABLES_MEMORY_MB
    fragments: Fragments = Fragments()
    #: The appliance's own address on the backend network; None: no health
    #: checks, no kernel interface.
    health_checks: Optional[HealthChecks] = None

    def maglev_size(self, service: Service) -> int:
        """Entries of the service's Maglev table: its own maglev_table_size,
        else this file's, else default_maglev_table_size(its backends)."""
        if service.maglev_table_size is not None:
            return service.maglev_table_size
        if self.maglev_table_size is not None:
            return self.maglev_table_size
        return default_maglev_table_size(len(service.backends))

    @property
    def backend_count(self) -> int:
        """Backends over all services."""
        return self._summary().backends

    def tables_memory(self) -> int:
        """Bytes the load-balancing tables of this configuration may take
        at most, what tables_memory_mb bounds: two table generations and
        two of every service's Maglev table (while a change is published,
        the serving generation and the new one coexist, and a reload that
        changes every service builds every Maglev table anew)."""
        return self._summary().memory(self)

    def maglev_memory(self) -> int:
        """Bytes the services' Maglev tables take (once)."""
        return self._summary().maglev_bytes

    def service(self, key_or_name: ServiceRef) -> Service:
        """The service named by key, key text or name.

        Raises NotFoundError (a KeyError) if there is no such service, and
        TypeError if ``key_or_name`` is neither a ServiceKey nor a str.
        """
        summary = self._summary()
        if isinstance(key_or_name, str) and ":" not in key_or_name:
            # Names cannot contain ':', so this cannot be a key.
            try:
                return summary.by_name[key_or_name]
            except KeyError:
                raise NotFoundError(f"no service named {key_or_name!r}") from None
        if isinstance(key_or_name, str):
            try:
                key = parse_service_key(key_or_name)
            except ConfigError as err:
                raise NotFoundError(
                    f"no service {key_or_name!r} ({err.problem})") from None
        elif isinstance(key_or_name, tuple):
            key = key_or_name
        else:
            raise TypeError("a service is named by a ServiceKey or a str, "
                            f"not {type(key_or_name).__name__}")
        try:
            return summary.by_key[key]
        except (KeyError, TypeError):
            raise NotFoundError(f"no service {_key_text(key)}") from None

    def _service_index(self, key_or_name: ServiceRef) -> int:
        # Services are unique objects in the tuple: index() finds this one
        # by identity first, in C.
        return self.services.index(self.service(key_or_name))

    def _summary(self) -> "_Summary":
        summary = self.__dict__.get("_summary_cache")
        if summary is None:
            summary = _Summary.of(self)
            object.__setattr__(self, "_summary_cache", summary)
        return summary

    # -- immutable edits: each validates the one service it changes (as the
    # -- file's validator would, at the same index) and the totals.

    def with_service(self, service: Service) -> Config:
        """This configuration plus ``service``.

        Raises ConfigError if the result is invalid (e.g. the key or name is
        taken, too many services/backends, tables over tables_memory_mb),
        TypeError if ``service`` is not a Service made of Backends.
        """
        _require_type(service, Service, "service")
        for backend in service.backends:
            _require_type(backend, Backend, "each of service.backends")
        return self.with_service_data(service.to_dict(), source="with_service")

    def with_service_data(self, data: Any, source: str = "with_service") -> Config:
        """This configuration plus the service ``data`` in the file format
        (a mapping as under ``services:``), validated as the file's next
        service.  Raises ConfigError (with ``source``) like with_service."""
        return _Edit(self, source).add(data)

    def without_service(self, key_or_name: ServiceRef) -> Config:
        """This configuration minus one service.

        Raises ConfigError if there is no such service.
        """
        edit = _Edit(self, "without_service")
        return edit.remove(edit.target(key_or_name))

    def with_backend(self, service_key_or_name: ServiceRef, backend: Backend) -> Config:
        """This configuration with ``backend`` appended to a service.

        Raises ConfigError if there is no such service, if the service
        already has a backend at ``backend.ip:backend.port``, or if the
        result is otherwise invalid (too many backends, bad values);
        TypeError if ``backend`` is not a Backend.
        """
        _require_type(backend, Backend, "backend")
        edit = _Edit(self, "with_backend")
        index = edit.target(service_key_or_name)
        data = self.services[index].to_dict()
        data["backends"].append(backend.to_dict())
        return edit.replace(index, data)

    def without_backend(self, service_key_or_name: ServiceRef,
                        ip: Union[Address, str], port: int) -> Config:
        """This configuration with backend ``ip:port`` removed from a service.

        Raises ConfigError if there is no such service or backend.
        """
        edit = _Edit(self, "without_backend")
        index = edit.target(service_key_or_name)
        data = self.services[index].to_dict()
        del data["backends"][edit.backend_target(index, ip, port)]
        return edit.replace(index, data)

    def with_weight(self, service_key_or_name: ServiceRef,
                    ip: Union[Address, str], port: int, weight: int) -> Config:
        """This configuration with the weight of one backend changed.

        Raises ConfigError if there is no such service or backend, or if
        ``weight`` is not an integer in 0..65535.
        """
        edit = _Edit(self, "with_weight")
        index = edit.target(service_key_or_name)
        data = self.services[index].to_dict()
        data["backends"][edit.backend_target(index, ip, port)]["weight"] = weight
        return edit.replace(index, data)

    def to_dict(self) -> dict:
        """The configuration as plain dicts/lists/str/int in the file format.

        ``parse_config(config.to_dict()) == config`` for any valid config.
        """
        data: dict = {"flow_table_size": self.flow_table_size}
        if self.maglev_table_size is not None:
            data["maglev_table_size"] = self.maglev_table_size
        data.update({
            "tables_memory_mb": self.tables_memory_mb,
            "timeouts": dataclasses.asdict(self.timeouts),
            "strict": self.strict,
            "fragments": dataclasses.asdict(self.fragments),
        })
        if self.health_checks is not None:
            data["health_checks"] = self.health_checks.to_dict()
        data["services"] = [service.to_dict() for service in self.services]
        return data


class _Summary:
    """What an edit checks against, kept with each Config and handed to the
    next one changed where the edit changed it: services by key and by
    name, and the totals."""

    __slots__ = ("by_key", "by_name", "backends", "maglev_bytes")

    def __init__(self, by_key: Dict[ServiceKey, Service], by_name: Dict[str, Service],
                 backends: int, maglev_bytes: int) -> None:
        self.by_key = by_key
        self.by_name = by_name
        self.backends = backends
        self.maglev_bytes = maglev_bytes

    @classmethod
    def of(cls, config: Config) -> "_Summary":
        summary = cls({}, {}, 0, 0)
        for service in config.services:
            summary.add(config, service)
        return summary

    def copy(self) -> "_Summary":
        return _Summary(dict(self.by_key), dict(self.by_name), self.backends, self.maglev_bytes)

    def add(self, config: Config, service: Service) -> None:
        self.by_key[service.key] = service
        if service.name is not None:
            self.by_name[service.name] = service
        self.backends += len(service.backends)
        self.maglev_bytes += maglev_memory(config, service)

    def remove(self, config: Config, service: Service) -> None:
        del self.by_key[service.key]
        if service.name is not None:
            del self.by_name[service.name]
        self.backends -= len(service.backends)
        self.maglev_bytes -= maglev_memory(config, service)

    def memory(self, config: Config) -> int:
        generation = _contract().tables_memory(len(config.services), self.backends)
        return 2 * (self.maglev_bytes + generation)


def edit_lineage(config: Config, ancestor: Config, limit: int = 64) -> Optional[set]:
    """The keys of the services that may differ between config and
    ancestor, when config was made from ancestor by at most limit edits
    (each differs from its parent in one service); None otherwise."""
    keys = set()
    while config is not ancestor:
        made_from = config.__dict__.get("_edited_from")
        if made_from is None or len(keys) >= limit:
            return None
        config, key = made_from
        keys.add(key)
    return keys


def forget_lineage(config: Config) -> None:
    """Let config's ancestors be freed (a running config keeps no chain)."""
    config.__dict__.pop("_edited_from", None)


def maglev_memory(config: Config, service: Service) -> int:
    """Bytes the service's Maglev table takes (none without backends)."""
    if not service.backends:
        return 0
    return _contract().maglev_memory(config.maglev_size(service), len(service.backends))


@lru_cache(maxsize=None)
def default_maglev_table_size(backends: int) -> int:
    """The Maglev table size of a service with this many backends, where
    neither the service nor the file sets one: a prime of at least
    MAGLEV_ENTRIES_PER_BACKEND entries per backend, from a ladder of sizes
    doubling from 1009 (so most backend additions and removals keep the
    size, and with it Maglev's minimal disruption), at most
    MAX_MAGLEV_TABLE_SIZE."""
    largest = _limit("MAX_MAGLEV_TABLE_SIZE")
    target = _MAGLEV_LADDER_BASE
    while target < MAGLEV_ENTRIES_PER_BACKEND * backends and target < largest:
        target *= 2
    if target >= largest:
        return _prime_at_most(largest)
    return _prime_at_least(target)


class _Edit:
    """One edit of a Config: finds its target, validates the changed
    service with the file's validator at its index, checks the totals, and
    builds the result with its summary."""

    def __init__(self, config: Config, source: str) -> None:
        self.config = config
        self.source = source
        self.checker = _Checker(source)

    def target(self, key_or_name: ServiceRef) -> int:
        try:
            return self.config._service_index(key_or_name)
        except NotFoundError as err:
            raise ConfigError(self.source, "services", str(err)) from None

    def backend_target(self, service_index: int, ip: Union[Address, str],
                       port: int) -> int:
        service = self.config.services[service_index]
        try:
            return service._backend_index(ip, port)
        except NotFoundError:
            path = (_Path().key("services").index(service_index)
                    .in_service(service.label).key("backends"))
            address = _lookup_address(ip)
            shown = f"{ip}:{port}" if address is None else address_port(address, port)
            raise ConfigError(self.source, path.field, f"no backend {shown}",
                              path.text) from None

    def add(self, data: Any) -> Config:
        config = self.config
        summary = config._summary()
        index = len(config.services)
        path = _Path().key("services")
        limit = _limit("MAX_SERVICES")
        if index + 1 > limit:
            self.checker.fail(path, f"{index + 1} services, more than the limit of {limit}")
        service_path = path.index(index)
        service = self.checker.service(data, service_path, summary.backends,
                                       config.maglev_table_size, config.health_checks)
        located = service_path.in_service(service.label)
        self._check_unique(service, located, summary)
        services = config.services + (service,)
        new_summary = summary.copy()
        return self._result(services, new_summary, add=service)

    def remove(self, index: int) -> Config:
        config = self.config
        removed = config.services[index]
        services = config.services[:index] + config.services[index + 1:]
        return self._result(services, config._summary().copy(), remove=removed)

    def replace(self, index: int, data: dict) -> Config:
        """The service at index replaced by data (same key and name)."""
        config = self.config
        summary = config._summary()
        old = config.services[index]
        service = self.checker.service(data, _Path().key("services").index(index),
                                       summary.backends - len(old.backends),
                                       config.maglev_table_size, config.health_checks)
        services = config.services[:index] + (service,) + config.services[index + 1:]
        return self._result(services, summary.copy(), add=service, remove=old)

    def _check_unique(self, service: Service, located: "_Path", summary: _Summary) -> None:
        services = self.config.services
        first = summary.by_key.get(service.key)
        if first is not None:
            position = services.index(first)
            first_text = _Path().key("services").index(position).in_service(first.label).text
            self.checker.fail(located, f"duplicate service, already defined at {first_text}")
        if service.name is not None and service.name in summary.by_name:
            position = services.index(summary.by_name[service.name])
            first_text = _Path().key("services").index(position).text
            self.checker.fail(located.key("name"), f"duplicate name {service.name!r}, "
                                                   f"already used by {first_text}")

    def _result(self, services: Tuple[Service, ...], summary: _Summary,
                add: Optional[Service] = None, remove: Optional[Service] = None) -> Config:
        config = dataclasses.replace(self.config, services=services)
        if remove is not None:
            summary.remove(self.config, remove)
        if add is not None:
            summary.add(self.config, add)
        self.checker.memory(config, summary)
        object.__setattr__(config, "_summary_cache", summary)
        # Which config this one was made from, and the one service that
        # differs: whoever applies it can rebuild that service alone
        # (edit_lineage).
        object.__setattr__(config, "_edited_from", (self.config, (add or remove).key))
        return config


_TOP_LEVEL_KEYS = ("flow_table_size", "maglev_table_size", "tables_memory_mb", "timeouts",
                   "strict", "fragments", "health_checks", "services")
_SERVICE_KEYS = ("name", "vip", "proto", "port", "maglev_table_size", "health", "backends")
_HEALTH_CHECKS_KEYS = ("source", "interface", "kernel_rate")
_HEALTH_KEYS = ("type", "port", "path", "expect", "payload", "reply", "interval", "timeout",
                "rise", "fall", "on_down", "on_all_down")
# Keys that only one type of check takes.
_HEALTH_TYPE_KEYS = {"path": "http", "expect": "http", "payload": "udp", "reply": "udp"}
_SERVICE_REQUIRED_KEYS = ("vip", "proto", "port")
_BACKEND_KEYS = ("ip", "port", "weight")
_BACKEND_REQUIRED_KEYS = ("ip", "port")
_TIMEOUT_KEYS = tuple(f.name for f in dataclasses.fields(Timeouts))
_FRAGMENT_KEYS = tuple(f.name for f in dataclasses.fields(Fragments))
# (lowest, the limit's name) of each key of `fragments`.
_FRAGMENT_RANGES = {"datagrams": (1, "MAX_FRAGMENT_DATAGRAMS"),
                    "held": (0, "MAX_FRAGMENT_HELD"),
                    "timeout": (1, "MAX_FRAGMENT_TIMEOUT")}


# --------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------


def split_address(text: str, counts: Tuple[int, ...], shape: str,
                  example: str) -> Tuple[str, list]:
    """Split ``"ip:a:b"`` or ``"[ipv6]:a:b"`` into the address text and the
    parts after it (``len(parts)`` one of counts), e.g. ``"[fd00::1]:80"``
    -> ``("fd00::1", ["80"])``.  Only the split: the values are not checked.

    Raises ValueError with one line naming the problem: brackets missing
    around an IPv6 address given with a port (the message shows the
    bracketed form), brackets around an IPv4 address, or the wrong number
    of parts (shape and example say what is expected).
    """
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"{text!r}: no ']' closes the IPv6 address; expected {shape}, "
                             f"e.g. {example}")
        host, rest = text[1:close], text[close + 1:]
        if _dotted_quad(host) is not None or not _is_ipv6(host):
            what = ("is an IPv4 address: brackets are for IPv6 addresses only"
                    if _dotted_quad(host) is not None else "is not an IPv6 address")
            raise ValueError(f"{text!r}: [{host}] {what}; expected {shape}, e.g. {example}")
        if not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected ':' after ']'; expected {shape}, "
                             f"e.g. {example}")
        parts = rest[1:].split(":")
    else:
        host, *parts = text.split(":")
        if len(parts) not in counts and text.count(":") >= 2:
            raise ValueError(_unbracketed(text, counts, shape, example))
    if len(parts) not in counts or not host:
        raise ValueError(f"{text!r}: expected {shape}, e.g. {example}")
    return host, parts


def _unbracketed(text: str, counts: Tuple[int, ...], shape: str, example: str) -> str:
    """The message for an IPv6 address given with a port without brackets:
    the bracketed form, where the text can be read as one."""
    for count in sorted(counts, reverse=True):
        pieces = text.rsplit(":", count)
        host, rest = pieces[0], pieces[1:]
        if len(rest) == count and _is_ipv6(host) and all(rest):
            canonical = IPv6Address(host)
            return (f"{text!r}: an IPv6 address with a port takes brackets: "
                    f"[{canonical}]:{':'.join(rest)} (expected {shape})")
    return (f"{text!r}: expected {shape}, e.g. {example} (an IPv6 address with a port "
            "takes brackets)")


def parse_address(text: str) -> Address:
    """An IPv4 or IPv6 address from its text (an IPv6 one may be in
    brackets), in canonical form.  Raises ConfigError if it is not one."""
    address = _lookup_address(text)
    if address is None:
        _Checker(f"address {text!r}").fail(_Path(), "not a valid IPv4 or IPv6 address")
    return address


def parse_service_key(text: str) -> ServiceKey:
    """Parse ``"vip:proto:port"``, e.g. ``"10.0.0.100:tcp:80"``, or with an
    IPv6 VIP in brackets, ``"[fd00::100]:tcp:80"``.

    The protocol is case-insensitive.  Raises ConfigError (source
    ``service key '<text>'``) if the text is not three ``:``-separated
    parts (an IPv6 VIP without brackets: the message shows them), or the
    address, protocol or port is invalid as in the file.
    """
    checker = _Checker(f"service key {text!r}")
    if not isinstance(text, str):
        checker.fail(_Path(), f"must be a string, got {_describe(text)}")
    try:
        vip_text, (proto_text, port_text) = split_address(
            text, (2,), "vip:proto:port", "10.0.0.100:tcp:80 or [fd00::100]:tcp:80")
    except ValueError as err:
        checker.fail(_Path(), str(err).partition(": ")[2])
    if not re.fullmatch(r"[0-9]+", port_text):
        checker.fail(_Path().key("port"), f"{port_text!r} is not a port number")
    return ServiceKey(
        checker.address(vip_text, _Path().key("vip"), "vip"),
        checker.protocol(proto_text, _Path().key("proto")),
        checker.integer(int(port_text), _Path().key("port"), 1, 65535),
    )


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Validate an already-loaded services file and build its Config.

    ``data`` is what ``yaml.safe_load`` returned: a mapping, or None for an
    empty file (all defaults).  ``source`` names the data in error messages
    (usually the file name).  Raises ConfigError on the first problem found;
    nothing is returned for a partially valid file.
    """
    return _Checker(source).config(data)


def load_config(path: Union[str, os.PathLike]) -> Config:
    """Read, parse and validate a services file, YAML or JSON.

    JSON (a subset of YAML) loads some fifty times faster, which counts
    from a few thousand services on: a file whose text is a JSON object is
    read as JSON, anything else as YAML.  Raises ConfigError naming the file
    if it cannot be read, is not valid YAML (the message gives the line and
    column), repeats a key within one mapping, or fails validation (see
    :func:`parse_config`).
    """
    source = os.fsdecode(path)
    try:
        with open(path, "rb") as stream:
            raw = stream.read()
    except OSError as err:
        raise ConfigError(source, "", f"cannot read file: {err.strerror or err}") from err
    data = _load_json(raw, source) if raw.lstrip()[:1] == b"{" else _NOT_JSON
    if data is _NOT_JSON:
        data = _load_yaml(raw, source)
    return parse_config(data, source)


_NOT_JSON = object()


def _load_json(raw: bytes, source: str) -> Any:
    """The document, or _NOT_JSON when raw is not JSON (YAML's flow style,
    e.g. `{services: []}`, is read as YAML then)."""
    def unique_keys(pairs: list) -> dict:
        mapping: dict = {}
        for key, value in pairs:
            if key in mapping:
                raise ConfigError(source, "", f"invalid JSON: duplicate key {_show(key)}")
            mapping[key] = value
        return mapping
    decoder = json.JSONDecoder(object_pairs_hook=unique_keys)
    try:
        text = raw.decode("utf-8")
        try:
            return _decode_by_service(text, decoder, unique_keys)
        except ValueError:
            # Not of the top-level shape read piecewise: the whole parse
            # says what is wrong (or that it is not JSON).
            return decoder.decode(text)
    except ConfigError:
        raise
    except RecursionError as err:
        raise ConfigError(source, "", "invalid JSON: nested too deeply") from err
    except ValueError:           # not JSON (UnicodeDecodeError and huge ints included)
        return _NOT_JSON


def _decode_by_service(text: str, decoder: json.JSONDecoder, unique_keys) -> dict:
    """A top-level JSON object whose "services" list is decoded one service
    at a time: one json.loads of a 10,000-service file holds the GIL for
    some 60 ms, in which the control socket cannot answer; between two
    services the other threads may run.  ValueError where the text is not
    such an object."""
    space = json.decoder.WHITESPACE.match
    at = space(text, 0).end()
    if text[at:at + 1] != "{":
        raise ValueError("not an object")
    at = space(text, at + 1).end()
    pairs = []
    if text[at:at + 1] != "}":
        while True:
            key, at = decoder.raw_decode(text, at)
            if not isinstance(key, str):
                raise ValueError("a key is not a string")
            at = space(text, at).end()
            if text[at:at + 1] != ":":
                raise ValueError("no ':' after a key")
            at = space(text, at + 1).end()
            if key == "services" and text[at:at + 1] == "[":
                value, at = _decode_list(text, at, decoder, space)
            else:
                value, at = decoder.raw_decode(text, at)
            pairs.append((key, value))
            at = space(text, at).end()
            if text[at:at + 1] != ",":
                break
            at = space(text, at + 1).end()
    if text[at:at + 1] != "}":
        raise ValueError("no ',' or '}' after a value")
    if space(text, at + 1).end() != len(text):
        raise ValueError("text after the object")
    return unique_keys(pairs)


def _decode_list(text: str, at: int, decoder: json.JSONDecoder, space) -> Tuple[list, int]:
    items = []
    at = space(text, at + 1).end()
    if text[at:at + 1] != "]":
        while True:
            item, at = decoder.raw_decode(text, at)
            items.append(item)
            at = space(text, at).end()
            if text[at:at + 1] != ",":
                break
            at = space(text, at + 1).end()
    if text[at:at + 1] != "]":
        raise ValueError("no ',' or ']' after a list item")
    return items, at + 1


def _load_yaml(raw: bytes, source: str) -> Any:
    try:
        return yaml.load(raw, Loader=_UniqueKeySafeLoader)  # noqa: S506 (safe loader)
    except yaml.MarkedYAMLError as err:
        raise ConfigError(source, "", _describe_yaml_error(err)) from err
    except yaml.YAMLError as err:
        raise ConfigError(source, "", f"invalid YAML: {err}") from err
    except RecursionError as err:
        raise ConfigError(source, "", "invalid YAML: nested too deeply") from err
    except ValueError as err:
        # PyYAML lets int() errors escape, e.g. for a number over 4300 digits.
        raise ConfigError(source, "", f"invalid YAML: {err}") from err


def dump_config(config: Config, form: str = "yaml") -> str:
    """The services file text for ``config`` in form "yaml" or "json";
    loading it gives ``config`` back."""
    if form == "json":
        # One service a line: readable, and as fast to load as JSON goes.
        data = config.to_dict()
        services = data.pop("services")
        head = json.dumps(data)[:-1]
        lines = ",\n  ".join(json.dumps(service) for service in services)
        return f'{head}, "services": [\n  {lines}\n]}}\n' if services else \
            f'{head}, "services": []}}\n'
    if form != "yaml":
        raise ValueError(f"form must be yaml or json, not {form!r}")
    # default_flow_style=None writes collections of scalars (a backend, the
    # timeouts) on one line, as people write them by hand.
    return yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=None)


def config_form(path: Union[str, os.PathLike]) -> str:
    """The form a services file is written in, by its name: "json" for
    *.json, else "yaml"."""
    return "json" if os.fspath(path).lower().endswith(".json") else "yaml"


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


class _Path:
    """Where a value sits in the file.

    ``field`` is the path for programs (``services[1].backends[0].port``);
    ``head``/``tail`` make the path for people, with the service named:
    ``services[1] (dns)`` / ``backends[0].port``.

    A path is a link to its parent plus one step, made for every value
    checked: its strings are built only when an error names it.
    """

    __slots__ = ("_parent", "_step", "_kind")

    def __init__(self, parent: Optional[_Path] = None, step: Any = None,
                 kind: str = "") -> None:
        self._parent = parent
        self._step = step
        self._kind = kind         # "key", "index", "service" (step: its label), or root

    def key(self, name: str) -> _Path:
        return _Path(self, name, "key")

    def index(self, position: int) -> _Path:
        return _Path(self, position, "index")

    def in_service(self, label: str) -> _Path:
        """This path (``services[i]``), now naming the service it points at."""
        return _Path(self, label, "service")

    def _parts(self) -> Tuple[str, str, str]:
        """(field, head, tail)."""
        if self._parent is None:
            return "", "", ""
        field, head, tail = self._parent._parts()
        if self._kind == "key":
            return _dotted(field, self._step), head, _dotted(tail, self._step)
        if self._kind == "index":
            return f"{field}[{self._step}]", head, f"{tail}[{self._step}]"
        text = ": ".join(part for part in (head, tail) if part)
        return field, f"{text} ({self._step})", ""

    @property
    def field(self) -> str:
        return self._parts()[0]

    @property
    def tail(self) -> str:
        return self._parts()[2]

    @property
    def text(self) -> str:
        _, head, tail = self._parts()
        return ": ".join(part for part in (head, tail) if part)


def _dotted(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


class _Checker:
    """Checks file-format data against the rules; raises ConfigError on the first problem."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: _Path, problem: str) -> NoReturn:
        raise ConfigError(self.source, path.field, problem, path.text)

    # -- the document

    def config(self, data: Any) -> Config:
        root = _Path()
        if data is None:  # an empty file
            data = {}
        if not isinstance(data, Mapping):
            self.fail(root, f"the top level must be a mapping, got {_describe(data)}")
        self.known_keys(data, root, _TOP_LEVEL_KEYS)
        flow_table_size = self.integer(
            data.get("flow_table_size", DEFAULT_FLOW_TABLE_SIZE),
            root.key("flow_table_size"), 1, _limit("MAX_FLOW_TABLE_SIZE"))
        maglev_table_size = data.get("maglev_table_size")
        if maglev_table_size is not None:
            maglev_table_size = self.maglev_table_size(maglev_table_size,
                                                       root.key("maglev_table_size"))
        tables_memory_mb = self.integer(
            data.get("tables_memory_mb", DEFAULT_TABLES_MEMORY_MB),
            root.key("tables_memory_mb"), 1, MAX_TABLES_MEMORY_MB)
        timeouts = self.timeouts(data.get("timeouts"), root.key("timeouts"))
        strict = data.get("strict", False)
        if not isinstance(strict, bool):
            self.fail(root.key("strict"), f"must be true or false, got {_describe(strict)}")
        fragments = self.fragments(data.get("fragments"), root.key("fragments"))
        health_checks = self.health_checks(data.get("health_checks"),
                                           root.key("health_checks"))
        services, summary = self.services(data.get("services"), root.key("services"),
                                          maglev_table_size, health_checks)
        config = Config(services, flow_table_size, maglev_table_size, timeouts, strict,
                        tables_memory_mb, fragments, health_checks)
        summary.maglev_bytes = sum(maglev_memory(config, service) for service in services)
        self.memory(config, summary)
        object.__setattr__(config, "_summary_cache", summary)
        return config

    def maglev_table_size(self, value: Any, path: _Path) -> int:
        size = self.integer(value, path, _limit("MIN_MAGLEV_TABLE_SIZE"),
                            _limit("MAX_MAGLEV_TABLE_SIZE"))
        if not _is_prime(size):
            lower = _prime_at_most(size)
            higher = _prime_at_least(size)
            self.fail(path, f"{size} is not prime (the Maglev permutation needs a "
                            f"prime table size; the nearest are {lower} and {higher})")
        return size

    def memory(self, config: Config, summary: _Summary) -> None:
        """The tables of config must fit in its tables_memory_mb."""
        need = summary.memory(config)
        budget = config.tables_memory_mb << 20
        if need <= budget:
            return
        entries = sum(config.maglev_size(s) for s in summary.by_key.values() if s.backends)
        self.fail(_Path().key("tables_memory_mb"),
                  f"the load-balancing tables would need {_mib(need)} MiB, more than "
                  f"tables_memory_mb {config.tables_memory_mb}: {len(config.services):,} "
                  f"services' Maglev tables take {_mib(summary.maglev_bytes)} MiB "
                  f"({entries:,} entries of 4 bytes), twice while a reload rebuilds them; "
                  "give services smaller maglev_table_size values (or none: the default "
                  "follows each service's backend count), or raise tables_memory_mb")

    def timeouts(self, data: Any, path: _Path) -> Timeouts:
        if data is None:  # "timeouts:" with nothing under it
            return Timeouts()
        self.mapping(data, path, _TIMEOUT_KEYS)
        return Timeouts(**{
            name: self.integer(data[name], path.key(name), 1, _limit("MAX_TIMEOUT"))
            for name in _TIMEOUT_KEYS if name in data})

    def fragments(self, data: Any, path: _Path) -> Fragments:
        if data is None:  # "fragments:" with nothing under it
            return Fragments()
        self.mapping(data, path, _FRAGMENT_KEYS)
        return Fragments(**{
            name: self.integer(data[name], path.key(name), _FRAGMENT_RANGES[name][0],
                               _limit(_FRAGMENT_RANGES[name][1]))
            for name in _FRAGMENT_KEYS if name in data})

    # -- services

    def services(self, data: Any, path: _Path, maglev_table_size: Optional[int],
                 health_checks: Optional[HealthChecks] = None
                 ) -> Tuple[Tuple[Service, ...], _Summary]:
        if data is None:  # "services:" with nothing under it
            return (), _Summary({}, {}, 0, 0)
        items = self.sequence(data, path)
        limit = _limit("MAX_SERVICES")
        if len(items) > limit:
            self.fail(path, f"{len(items)} services, more than the limit of {limit}")
        services = []
        index_by_key: dict = {}
        index_by_name: dict = {}
        backend_count = 0
        for index, item in enumerate(items):
            service_path = path.index(index)
            service = self.service(item, service_path, backend_count, maglev_table_size,
                                   health_checks)
            backend_count += len(service.backends)
            located = service_path.in_service(service.label)
            if service.key in index_by_key:
                first = index_by_key[service.key]
                first_text = path.index(first).in_service(services[first].label).text
                self.fail(located, f"duplicate service, already defined at {first_text}")
            if service.name is not None and service.name in index_by_name:
                first_text = path.index(index_by_name[service.name]).text
                self.fail(located.key("name"),
                          f"duplicate name {service.name!r}, already used by {first_text}")
            index_by_key[service.key] = index
            if service.name is not None:
                index_by_name[service.name] = index
            services.append(service)
        summary = _Summary({s.key: s for s in services},
                           {s.name: s for s in services if s.name is not None},
                           backend_count, 0)
        return tuple(services), summary

    def service(self, data: Any, path: _Path, earlier_backends: int,
                maglev_table_size: Optional[int],
                health_checks: Optional[HealthChecks] = None) -> Service:
        """One service at path; maglev_table_size, health_checks: the
        file's (None: not set)."""
        if not isinstance(data, Mapping):
            self.fail(path, f"must be a mapping, got {_describe(data)}")
        path = path.in_service(_provisional_label(data))
        self.mapping(data, path, _SERVICE_KEYS, _SERVICE_REQUIRED_KEYS)
        name = self.name(data.get("name"), path.key("name"))
        vip = self.address(data["vip"], path.key("vip"), "vip")
        proto = self.protocol(data["proto"], path.key("proto"))
        port = self.integer(data["port"], path.key("port"), 1, 65535)
        own_size = data.get("maglev_table_size")
        if own_size is not None:
            own_size = self.maglev_table_size(own_size, path.key("maglev_table_size"))
        backends = self.backends(data.get("backends"), path.key("backends"),
                                 earlier_backends, own_size, maglev_table_size, vip)
        health = None
        if data.get("health") is not None:
            if vip.version == 6:
                # The checks leave from the appliance's own kernel
                # interface, which has an IPv4 address only
                # (health_checks.source).
                self.fail(path.key("health"),
                          "IPv6 health checks are not supported yet: the appliance's "
                          "kernel interface has only an IPv4 address (health_checks.source); "
                          "remove health from this IPv6 service")
            health = self.health(data["health"], path.key("health"), health_checks)
        if health_checks is not None:
            self.clear_of_source(vip, backends, health is not None, path, health_checks)
        return Service(vip, proto, port, backends, name, own_size, health)

    # -- health checks

    def health_checks(self, data: Any, path: _Path) -> Optional[HealthChecks]:
        if data is None:
            return None
        self.mapping(data, path, _HEALTH_CHECKS_KEYS, ("source",))
        source = self.source_interface(data["source"], path.key("source"))
        interface = data.get("interface", DEFAULT_KERNEL_INTERFACE)
        where = path.key("interface")
        if not isinstance(interface, str):
            self.fail(where, f"must be a network interface name, got {_describe(interface)}")
        if not 1 <= len(interface) <= MAX_INTERFACE_NAME:
            self.fail(where, f"{_show(interface)} must be 1-{MAX_INTERFACE_NAME} characters "
                             "long (Linux's limit for an interface name)")
        if not _INTERFACE_PATTERN.fullmatch(interface) or interface in (".", ".."):
            self.fail(where, f"{_show(interface)} may contain only letters, digits, '_', '.' "
                             "and '-'")
        rate = self.integer(data.get("kernel_rate", DEFAULT_KERNEL_RATE),
                            path.key("kernel_rate"), 100, MAX_KERNEL_RATE)
        return HealthChecks(source, interface, rate)

    def source_interface(self, value: Any, path: _Path) -> ipaddress.IPv4Interface:
        example = "e.g. 10.10.0.2/24"
        if not isinstance(value, str):
            self.fail(path, f"must be ADDRESS/PREFIX ({example}), got {_describe(value)}")
        text, slash, prefix = value.partition("/")
        if not slash:
            self.fail(path, f"{_show(value)} has no prefix length: write ADDRESS/PREFIX "
                            f"({example}), the backend network's")
        if _is_ipv6(text):
            self.fail(path, f"{_show(value)}: the appliance's kernel interface takes an IPv4 "
                            "address (IPv6 health checks are not supported yet)")
        if not re.fullmatch(r"[0-9]{1,2}", prefix) or not 8 <= int(prefix) <= 32:
            self.fail(path, f"{_show(value)}: the prefix length must be 8-32")
        address = self.ipv4(text, path)
        interface = ipaddress.IPv4Interface(f"{address}/{prefix}")
        if interface.network.prefixlen < 31 and address in (
                interface.network.network_address, interface.network.broadcast_address):
            self.fail(path, f"{address} is the {'network' if address == interface.network.network_address else 'broadcast'} "
                            f"address of {interface.network}, not a host's")
        return interface

    def health(self, data: Any, path: _Path,
               health_checks: Optional[HealthChecks]) -> Health:
        self.mapping(data, path, _HEALTH_KEYS)
        if health_checks is None:
            self.fail(path, "health checks need the appliance's own address on the backend "
                            "network: add the top-level health_checks, e.g. "
                            "health_checks: {source: 10.10.0.2/24}")
        kind = data.get("type", "tcp")
        if not isinstance(kind, str) or kind not in HEALTH_CHECK_TYPES:
            self.fail(path.key("type"), f"{_show(kind)} is not a check type (expected "
                                        f"{', '.join(HEALTH_CHECK_TYPES)})")
        for key, only in _HEALTH_TYPE_KEYS.items():
            if key in data and only != kind:
                self.fail(path.key(key), f"applies to type {only} checks only, not {kind}")
        port = data.get("port")
        if port is not None:
            port = self.integer(port, path.key("port"), 1, 65535)
        values: dict = {"type": kind, "port": port}
        if kind == "http":
            values["path"] = self.http_path(data.get("path", "/"), path.key("path"))
            values["expect"] = self.expect(data.get("expect", [200]), path.key("expect"))
        if kind == "udp":
            for key in ("payload", "reply"):
                if key not in data:
                    self.fail(path.key(key), f"a udp check needs a {key} (the datagram "
                                             f"{'sent' if key == 'payload' else 'expected back'})")
                values[key] = self.udp_text(data[key], path.key(key))
        interval = self.seconds(data.get("interval", Health.interval), path.key("interval"),
                                MIN_INTERVAL, MAX_INTERVAL)
        timeout = self.seconds(data.get("timeout", min(Health.timeout, interval)),
                               path.key("timeout"), MIN_TIMEOUT, MAX_INTERVAL)
        if timeout > interval:
            self.fail(path.key("timeout"), f"{_number_text(timeout)} s is longer than the "
                                           f"interval ({_number_text(interval)} s): a check "
                                           "must end before the next one starts")
        for key in ("rise", "fall"):
            values[key] = self.integer(data.get(key, getattr(Health, key)), path.key(key), 1,
                                       MAX_RISE_FALL)
        values["on_down"] = self.choice(data.get("on_down", "keep"), path.key("on_down"),
                                        ON_DOWN)
        values["on_all_down"] = self.choice(data.get("on_all_down", "open"),
                                            path.key("on_all_down"), ON_ALL_DOWN)
        return Health(interval=interval, timeout=timeout, **values)

    def http_path(self, value: Any, path: _Path) -> str:
        if not isinstance(value, str):
            self.fail(path, f"must be a URL path such as /healthz, got {_describe(value)}")
        if not value.startswith("/"):
            self.fail(path, f"{_show(value)} must start with '/'")
        if len(value) > MAX_PATH:
            self.fail(path, f"is {len(value)} characters long, more than {MAX_PATH}")
        if any(not "!" <= c <= "~" for c in value):
            self.fail(path, f"{_show(value)} may contain only printable ASCII without spaces "
                            "(percent-encode the others)")
        return value

    def expect(self, value: Any, path: _Path) -> Tuple[int, ...]:
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        items = self.sequence(value, path)
        if not 1 <= len(items) <= MAX_EXPECT:
            self.fail(path, f"must list 1-{MAX_EXPECT} HTTP status codes, e.g. [200]")
        codes = []
        for index, item in enumerate(items):
            code = self.integer(item, path.index(index), 100, 599)
            if code in codes:
                self.fail(path.index(index), f"status {code} is listed twice")
            codes.append(code)
        return tuple(codes)

    def udp_text(self, value: Any, path: _Path) -> str:
        if not isinstance(value, str):
            self.fail(path, f"must be a string, got {_describe(value)}")
        size = len(value.encode("utf-8", "surrogatepass"))
        if not 1 <= size <= MAX_UDP_PAYLOAD:
            self.fail(path, f"must be 1-{MAX_UDP_PAYLOAD} bytes long (UTF-8), not {size}")
        return value

    def seconds(self, value: Any, path: _Path, low: float, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (numbers.Integral, float)):
            self.fail(path, f"must be a number of seconds, got {_describe(value)}")
        number = float(value) if not isinstance(value, numbers.Integral) or \
            value.bit_length() <= 64 else float("inf")
        if not low <= number <= high:       # NaN fails too
            self.fail(path, f"{_show(value)} s is outside {_number_text(low)}-"
                            f"{_number_text(high)} s")
        return number

    def choice(self, value: Any, path: _Path, allowed: Tuple[str, ...]) -> str:
        if not isinstance(value, str) or value not in allowed:
            self.fail(path, f"{_show(value)} is not one of {', '.join(allowed)}")
        return value

    def clear_of_source(self, vip: Address, backends: Tuple[Backend, ...], checked: bool,
                        path: _Path, health_checks: HealthChecks) -> None:
        """The appliance's own address is no VIP and no backend; the
        backends a check reaches are on its network."""
        source = health_checks.source
        where = "health_checks.source"
        if vip.version != source.version:
            return                  # an IPv6 service: its addresses cannot be the source's
        if vip == source.ip:
            self.fail(path.key("vip"), f"{vip} is the appliance's own address ({where})")
        network = source.network
        low, high = int(network.network_address), int(network.broadcast_address)
        own = int(source.ip)
        for index, backend in enumerate(backends):
            address = int(backend.ip)
            if address == own:
                self.fail(path.key("backends").index(index).key("ip"),
                          f"{backend.ip} is the appliance's own address ({where})")
            if checked and not low <= address <= high:
                self.fail(path.key("backends").index(index).key("ip"),
                          f"{backend.ip} is not on the health checks' network {network} "
                          f"({where}): rplb reaches only backends on that network")

    def name(self, value: Any, path: _Path) -> Optional[str]:
        if value is None:  # "name:" with no value: an unnamed service
            return None
        if not isinstance(value, str):
            self.fail(path, f"must be a string, got {_describe(value)}")
        if not 1 <= len(value) <= MAX_NAME_LENGTH:
            self.fail(path, f"{_show(value)} must be 1-{MAX_NAME_LENGTH} characters long")
        if not _NAME_PATTERN.fullmatch(value):
            self.fail(path, f"{_show(value)} may contain only letters, digits, '_', '.' and '-'")
        return value

    def backends(self, data: Any, path: _Path, earlier_backends: int,
                 own_size: Optional[int], file_size: Optional[int],
                 vip: Address) -> Tuple[Backend, ...]:
        if data is None:  # "backends:" with nothing under it
            return ()
        items = self.sequence(data, path)
        # Counted before parsing them, so that a huge list fails fast.
        limit = _limit("MAX_BACKENDS")
        if earlier_backends + len(items) > limit:
            self.fail(path, f"{len(items)} backends bring the total over all services to "
                            f"{earlier_backends + len(items)}, more than the limit of "
                            f"{limit} backends over all services")
        # A derived size always fits (100 entries a backend, or the largest).
        if own_size is not None and len(items) > own_size:
            self.fail(path, f"{len(items)} backends do not fit in the service's "
                            f"maglev_table_size {own_size}, which must be at least its "
                            "number of backends")
        if own_size is None and file_size is not None and len(items) > file_size:
            self.fail(path, f"{len(items)} backends do not fit in maglev_table_size "
                            f"{file_size}, which must be at least the number "
                            "of backends of every service")
        backends = []
        index_by_key: dict = {}
        for index, item in enumerate(items):
            backend_path = path.index(index)
            backend = self.backend(item, backend_path)
            if backend.ip.version != vip.version:
                self.fail(backend_path.key("ip"),
                          f"{backend.ip} is an IPv{backend.ip.version} address but the service's "
                          f"vip {vip} is IPv{vip.version}: a service's backends must be in "
                          "its VIP's address family (NAT64/NAT46 are not supported)")
            if backend.key in index_by_key:
                self.fail(backend_path, f"duplicate backend {backend}, already at "
                                        f"{path.tail}[{index_by_key[backend.key]}]")
            index_by_key[backend.key] = index
            backends.append(backend)
        return tuple(backends)

    def backend(self, data: Any, path: _Path) -> Backend:
        self.mapping(data, path, _BACKEND_KEYS, _BACKEND_REQUIRED_KEYS)
        return Backend(
            self.address(data["ip"], path.key("ip"), "backend"),
            self.integer(data["port"], path.key("port"), 1, 65535),
            self.integer(data.get("weight", 1), path.key("weight"), 0, _limit("MAX_WEIGHT")),
        )

    # -- values

    def mapping(self, data: Any, path: _Path, allowed: Tuple[str, ...],
                required: Tuple[str, ...] = ()) -> Mapping:
        if not isinstance(data, Mapping):
            self.fail(path, f"must be a mapping, got {_describe(data)}")
        self.known_keys(data, path, allowed)
        for key in required:
            if key not in data:
                self.fail(path.key(key), "missing required key")
        return data

    def known_keys(self, data: Mapping, path: _Path, allowed: Tuple[str, ...]) -> None:
        for key in data:
            if key not in allowed:
                hint = ""
                if isinstance(key, str):
                    close = difflib.get_close_matches(key, allowed, n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                readable = (isinstance(key, str) and key.isprintable()
                            and 0 < len(key) <= 40)
                self.fail(path.key(key if readable else _show(key)),
                          f"unknown key (allowed: {', '.join(allowed)}){hint}")

    def sequence(self, data: Any, path: _Path) -> Union[list, tuple]:
        if not isinstance(data, (list, tuple)):
            self.fail(path, f"must be a list, got {_describe(data)}")
        return data

    def integer(self, value: Any, path: _Path, low: int, high: int) -> int:
        # bool is an int subclass, but "port: yes" is a mistake, not port 1.
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            self.fail(path, f"must be an integer, got {_describe(value)}")
        number = int(value)
        if not low <= number <= high:
            self.fail(path, f"{_show(number)} is outside {low}-{high}")
        return number

    def ipv4(self, value: Any, path: _Path) -> IPv4Address:
        if isinstance(value, IPv4Address):
            address = value
        elif isinstance(value, str) and (address := _dotted_quad(value)) is not None:
            pass
        elif isinstance(value, str):
            try:
                address = IPv4Address(value)
            except ValueError:
                self.fail(path, f"{_show(value)} is "
                          + ("an IPv6 address; an IPv4 address is needed here"
                             if _is_ipv6(value) else "not a valid IPv4 address"))
        elif isinstance(value, ipaddress.IPv6Address):
            self.fail(path, f"{value} is an IPv6 address; an IPv4 address is needed here")
        else:
            self.fail(path, f"must be an IPv4 or IPv6 address, got {_describe(value)}")
        # The integer, not the properties: a large file checks 100,000s.
        number = int(address)
        if number == 0:
            self.fail(path, f"{address} is the unspecified address, not a unicast address")
        if number == 0xFFFFFFFF:
            self.fail(path, f"{address} is the broadcast address, not a unicast address")
        if number >> 28 == 0xE:       # 224.0.0.0/4
            self.fail(path, f"{address} is a multicast address, not a unicast address")
        return address

    def address(self, value: Any, path: _Path, role: str) -> Address:
        """A VIP's (role "vip") or a backend's ("backend") address, IPv4 or
        IPv6, that can be one."""
        if isinstance(value, IPv6Address) or (
                isinstance(value, str) and ":" in value and _dotted_quad(value) is None):
            return self.ipv6(value, path, role)
        return self.ipv4(value, path)

    def ipv6(self, value: Any, path: _Path, role: str) -> IPv6Address:
        if isinstance(value, IPv6Address):
            address = value
        else:
            if value.startswith("[") and value.endswith("]") and _is_ipv6(value[1:-1]):
                self.fail(path, f"{_show(value)}: write the address without brackets "
                                "(brackets only go with a port)")
            try:
                address = IPv6Address(value)
            except ValueError:
                if _dotted_quad(value.rpartition(":")[0]) is not None:
                    self.fail(path, f"{_show(value)} is not a valid IPv4 address: the port "
                                    "goes in its own field")
                self.fail(path, f"{_show(value)} is not a valid IPv6 address")
        if address.scope_id is not None:
            self.fail(path, f"{_show(str(address))}: a zone index (%...) has no meaning "
                            "here: write the address alone")
        number = int(address)
        if number == 0:
            self.fail(path, f"{address} is the unspecified address, not a unicast address")
        if number == 1:
            self.fail(path, f"{address} is the loopback address, not a unicast address "
                            "another host can reach")
        if number >> 120 == 0xFF:     # ff00::/8
            self.fail(path, f"{address} is a multicast address, not a unicast address")
        if number >> 32 == 0xFFFF:    # ::ffff:0:0/96
            self.fail(path, f"{address} is an IPv4-mapped IPv6 address: write the IPv4 "
                            f"address {address.ipv4_mapped} (NAT64/NAT46, IPv6 in front "
                            "of IPv4 or back, are not supported)")
        if role == "vip" and number >> 118 == 0x3FA:    # fe80::/10
            self.fail(path, f"{address} is a link-local address: a VIP must be reachable "
                            "beyond one link (a link-local address is valid only with a "
                            "zone, on one link, and routers never forward it)")
        return address

    def protocol(self, value: Any, path: _Path) -> str:
        if not isinstance(value, str):
            self.fail(path, f"must be tcp or udp, got {_describe(value)}")
        proto = value.lower()
        if proto not in PROTOCOLS:
            self.fail(path, f"unknown protocol {_show(value)} (expected tcp or udp)")
        return proto


def _dotted_quad(text: str) -> Optional[IPv4Address]:
    """The address of the common spelling (four decimal octets), parsed
    without ipaddress's general parser: a large file has 100,000s.  None
    for anything else, which that parser then checks (with its messages)."""
    if not _DOTTED_QUAD.fullmatch(text):
        return None
    a, b, c, d = map(int, text.split("."))
    if a > 255 or b > 255 or c > 255 or d > 255:
        return None
    return IPv4Address(a << 24 | b << 16 | c << 8 | d)


def _provisional_label(data: Mapping) -> str:
    """The service's label before its fields are validated (they may be bad).

    Same as Service.label for a valid service; shows '?' for a missing or
    unprintable vip/proto/port.
    """
    name = data.get("name")
    if isinstance(name, str) and _NAME_PATTERN.fullmatch(name) and len(name) <= MAX_NAME_LENGTH:
        return name

    def part(value: Any) -> str:
        if isinstance(value, bool):
            return "?"
        if isinstance(value, int) and value.bit_length() <= 64:
            return str(value)
        if isinstance(value, (str, IPv4Address)):
            text = str(value)
            if 0 < len(text) <= 40 and text.isprintable() and ":" not in text:
                return text
        return "?"

    vip = data.get("vip")
    vip_text = part(vip)
    if isinstance(vip, (str, IPv6Address)) and vip_text == "?" and ":" in str(vip):
        address = _lookup_address(vip)
        if address is not None and address.version == 6 and address.scope_id is None:
            vip_text = f"[{address}]"
    proto = part(data.get("proto"))
    return f"{vip_text}:{proto.lower()}:{part(data.get('port'))}"


def _require_type(value: Any, expected: type, what: str) -> None:
    if not isinstance(value, expected):
        raise TypeError(f"{what} must be a {expected.__name__}, not {type(value).__name__}")


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    divisor = 3
    while divisor * divisor <= n:
        if n % divisor == 0:
            return False
        divisor += 2
    return True


def _prime_at_least(n: int) -> int:
    while not _is_prime(n):
        n += 1
    return n


def _prime_at_most(n: int) -> int:
    while n > 2 and not _is_prime(n):
        n -= 1
    return n


def _mib(nbytes: int) -> str:
    return f"{nbytes / (1 << 20):,.1f}"


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _lookup_address(value: Any) -> Optional[Address]:
    """The address an operator names (text in any spelling, an IPv6 one
    with or without brackets, or an address object); None if it is none."""
    if isinstance(value, (IPv4Address, IPv6Address)):
        return value
    if not isinstance(value, str):
        return None
    text = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    if text is not value and ":" not in text:
        return None                  # brackets are for IPv6 only
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _key_text(key: tuple) -> str:
    return ":".join(str(part) for part in key)


def _show(value: Any) -> str:
    """A short, one-line rendering of a value from the file."""
    if isinstance(value, int) and not isinstance(value, bool):
        # str() of a huge int is slow, and refused beyond 4300 digits.
        return str(value) if value.bit_length() <= 128 else "a huge integer"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _describe(value: Any) -> str:
    """What a value from the file is, for 'must be X, got <this>'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"string {_show(value)}"
    if isinstance(value, int):
        return f"integer {_show(value)}"
    if isinstance(value, float):
        return f"number {_show(value)}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


# --------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------


# libyaml's parser where PyYAML has it (its wheels do): a services file of
# 10,000 services loads in seconds instead of tens of seconds.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeySafeLoader(_SafeLoader):
    """yaml.SafeLoader that rejects a key repeated within one mapping.

    Plain PyYAML keeps the last value silently, so a doubled ``port:`` in a
    service would be accepted with one of the two ports.

    The document is built from the composed nodes by a direct recursion
    for the tags a services file uses (mappings, sequences, strings,
    integers, booleans, null), several times faster than PyYAML's
    generic construction; any other tag, and a mapping with a merge key,
    is built by PyYAML itself.  Scalars are resolved through a cache: a
    services file repeats few values (keys, protocols, ports, weights)
    many times.
    """

    _resolved: dict = {}

    def resolve(self, kind, value, implicit):
        if kind is not yaml.ScalarNode:
            return super().resolve(kind, value, implicit)
        key = (value, implicit)
        tag = self._resolved.get(key)
        if tag is None:
            tag = super().resolve(kind, value, implicit)
            if len(self._resolved) < 4096:
                _UniqueKeySafeLoader._resolved[key] = tag
        return tag

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        return None if node is None else self._build(node, {})

    def _build(self, node: yaml.Node, built: dict) -> Any:
        tag = node.tag
        if isinstance(node, yaml.ScalarNode):
            if tag == _STR:
                return node.value
            if tag == _INT:
                return self.construct_yaml_int(node)
            if tag == _BOOL:
                return self.construct_yaml_bool(node)
            if tag == _NULL:
                return None
            return self.construct_object(node, deep=True)
        done = built.get(id(node))     # an alias of a node built already
        if done is not None:
            return done
        if isinstance(node, yaml.SequenceNode) and tag == _SEQ:
            items: list = []
            built[id(node)] = items
            items.extend(self._build(child, built) for child in node.value)
            return items
        if (not isinstance(node, yaml.MappingNode) or tag != _MAP
                or any(k.tag == _MERGE for k, _ in node.value)):
            return self.construct_object(node, deep=True)
        mapping: dict = {}
        built[id(node)] = mapping
        first_line_of_key: dict = {}
        for key_node, value_node in node.value:
            key = self._build(key_node, built)
            try:
                first_line = first_line_of_key.get(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, "found unhashable key",
                    key_node.start_mark) from None
            if first_line is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {_show(key)} (first at line {first_line})",
                    key_node.start_mark)
            first_line_of_key[key] = key_node.start_mark.line + 1
            mapping[key] = self._build(value_node, built)
        return mapping

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        # PyYAML's own construction (merge keys, other tags): the same check.
        first_line_of_key: dict = {}
        for key_node, _ in node.value:
            # A '<<' merge key may legitimately be overridden; only scalar
            # keys written twice in this very mapping are mistakes.
            if (not isinstance(key_node, yaml.ScalarNode)
                    or key_node.tag == _MERGE):
                continue
            key = self.construct_object(key_node)
            try:
                first_line = first_line_of_key.get(key)
            except TypeError:  # unhashable key: super() reports it
                continue
            if first_line is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {_show(key)} (first at line {first_line})",
                    key_node.start_mark)
            first_line_of_key[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


_STR, _INT, _BOOL, _NULL, _SEQ, _MAP, _MERGE = (
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "bool", "null", "seq", "map", "merge"))


def _describe_yaml_error(err: yaml.MarkedYAMLError) -> str:
    mark = err.problem_mark or err.context_mark
    problem = err.problem or err.context or "invalid YAML"
    context = f" ({err.context})" if err.problem and err.context else ""
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"invalid YAML{where}: {problem}{context}"
