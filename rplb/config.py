"""The services file: parse, validate, edit and write rplb's configuration.

The services file is YAML::

    flow_table_size: 1048576        # flows per worker lcore
    maglev_table_size: 65537        # prime, >= backends of any service
    timeouts: {tcp: 300, udp: 60}   # idle seconds (also tcp_syn, tcp_fin)
    strict: false                   # drop client traffic to backend addresses
    fragments: {datagrams: 4096, held: 1024, timeout: 5}   # IPv4 fragments, per worker
    services:
      - name: web                   # optional, unique
        vip: 10.0.0.100
        proto: tcp
        port: 80
        backends:
          - {ip: 192.168.1.10, port: 8080, weight: 10}

Every value is checked by one validator, :func:`parse_config`; every way of
obtaining a :class:`Config` (loading a file, the ``with_*``/``without_*`` edit
methods) goes through it, so a ``Config`` produced by this module is always
valid.  Errors are :class:`ConfigError`, whose message names the file, the
service and the field, on one line.

This module is pure Python (stdlib + PyYAML) on purpose: the control plane
validates a file before anything touches DPDK.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import numbers
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any, NamedTuple, NoReturn, Optional, Tuple, Union

import yaml

__all__ = [
    "Backend",
    "Config",
    "ConfigError",
    "Fragments",
    "NotFoundError",
    "Service",
    "ServiceKey",
    "Timeouts",
    "dump_config",
    "load_config",
    "parse_config",
    "parse_service_key",
    "DEFAULT_FLOW_TABLE_SIZE",
    "DEFAULT_MAGLEV_TABLE_SIZE",
    "MAX_BACKENDS",
    "MAX_FLOW_TABLE_SIZE",
    "MAX_FRAGMENT_DATAGRAMS",
    "MAX_FRAGMENT_HELD",
    "MAX_FRAGMENT_TIMEOUT",
    "MAX_MAGLEV_TABLE_SIZE",
    "MAX_SERVICES",
    "MAX_TIMEOUT",
    "MAX_WEIGHT",
    "MIN_MAGLEV_TABLE_SIZE",
    "PROTOCOLS",
]

DEFAULT_FLOW_TABLE_SIZE = 1 << 20
MAX_FLOW_TABLE_SIZE = 1 << 24
DEFAULT_MAGLEV_TABLE_SIZE = 65537
MIN_MAGLEV_TABLE_SIZE = 3
MAX_MAGLEV_TABLE_SIZE = 1000003
MAX_SERVICES = 1024
MAX_BACKENDS = 8192  # in total, over all services
MAX_TIMEOUT = 86400
MAX_WEIGHT = 65535
MAX_NAME_LENGTH = 63
# IPv4 fragments, per worker (csrc/fragment_table.h has the same limits:
# tests/test_fragments.py compares them).
MAX_FRAGMENT_DATAGRAMS = 1 << 20
MAX_FRAGMENT_HELD = 32768
MAX_FRAGMENT_TIMEOUT = 60
PROTOCOLS = ("tcp", "udp")

_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
_BROADCAST = IPv4Address("255.255.255.255")


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


class ServiceKey(NamedTuple):
    """What identifies a service: ``str(key)`` is ``"10.0.0.100:tcp:80"``."""

    vip: IPv4Address
    proto: str
    port: int

    def __str__(self) -> str:
        return f"{self.vip}:{self.proto}:{self.port}"


@dataclass(frozen=True)
class Backend:
    """One real server behind a service.  ``weight`` 0 drains it."""

    ip: IPv4Address
    port: int
    weight: int = 1

    @property
    def key(self) -> Tuple[IPv4Address, int]:
        """``(ip, port)``: unique within a service."""
        return (self.ip, self.port)

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"

    def to_dict(self) -> dict:
        """The backend as it is written in the services file."""
        return {"ip": str(self.ip), "port": self.port, "weight": self.weight}


@dataclass(frozen=True)
class Service:
    """A virtual service ``vip:proto:port`` and the backends serving it.

    With no backends the service exists but new flows to it are dropped.
    """

    vip: IPv4Address
    proto: str
    port: int
    backends: Tuple[Backend, ...] = ()
    name: Optional[str] = None

    @property
    def key(self) -> ServiceKey:
        return ServiceKey(self.vip, self.proto, self.port)

    @property
    def label(self) -> str:
        """How messages name the service: its name, else ``vip:proto:port``."""
        return self.name if self.name is not None else str(self.key)

    def backend(self, ip: Union[IPv4Address, str], port: int) -> Backend:
        """The backend ``ip:port``.

        Raises NotFoundError (a KeyError) if the service has no such backend,
        including when ``ip`` is not an IPv4 address at all.
        """
        return self.backends[self._backend_index(ip, port)]

    def _backend_index(self, ip: Union[IPv4Address, str], port: int) -> int:
        try:
            address = IPv4Address(ip)
        except ValueError:
            raise NotFoundError(
                f"service {self.label} has no backend {ip}:{port}") from None
        for index, backend in enumerate(self.backends):
            if backend.key == (address, port):
                return index
        raise NotFoundError(f"service {self.label} has no backend {address}:{port}")

    def to_dict(self) -> dict:
        """The service as it is written in the services file."""
        data: dict = {} if self.name is None else {"name": self.name}
        data.update(vip=str(self.vip), proto=self.proto, port=self.port,
                    backends=[backend.to_dict() for backend in self.backends])
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
    """What each worker keeps of IPv4 datagrams in fragments (rplb translates
    them fragment by fragment: docs/fastpath.md, "Fragments").

    ``datagrams``: datagrams tracked at once; a new one replaces the oldest
    when they are all taken.  ``held``: fragments held until their
    datagram's first fragment comes (each an mbuf out of the pool: rplb-dpdk
    checks that ``--mbufs`` covers them); 0 drops such fragments.
    ``timeout``: seconds after which an incomplete datagram is forgotten and
    its held fragments freed.
    """

    datagrams: int = 4096
    held: int = 1024
    timeout: int = 5


ServiceRef = Union[ServiceKey, str]
"""A service named by its key, its key as text (``"10.0.0.100:tcp:80"``) or its name."""


@dataclass(frozen=True)
class Config:
    """The whole services file.

    Build it with :func:`parse_config`/:func:`load_config` and change it with
    the ``with_*``/``without_*`` methods, which return a new, validated
    ``Config``.  (Calling the constructor directly validates nothing.)
    """

    services: Tuple[Service, ...] = ()
    flow_table_size: int = DEFAULT_FLOW_TABLE_SIZE
    maglev_table_size: int = DEFAULT_MAGLEV_TABLE_SIZE
    timeouts: Timeouts = Timeouts()
    # Drop IPv4 arriving on the frontend for a backend address, so the backend
    # network is not reachable through the balancer.  Off by default: the
    # service forwards traffic that is not for a service unchanged.
    strict: bool = False
    fragments: Fragments = Fragments()

    def service(self, key_or_name: ServiceRef) -> Service:
        """The service named by key, key text or name.

        Raises NotFoundError (a KeyError) if there is no such service, and
        TypeError if ``key_or_name`` is neither a ServiceKey nor a str.
        """
        return self.services[self._service_index(key_or_name)]

    def _service_index(self, key_or_name: ServiceRef) -> int:
        if isinstance(key_or_name, str) and ":" not in key_or_name:
            # Names cannot contain ':', so this cannot be a key.
            for index, service in enumerate(self.services):
                if service.name == key_or_name:
                    return index
            raise NotFoundError(f"no service named {key_or_name!r}")
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
        for index, service in enumerate(self.services):
            if service.key == key:
                return index
        raise NotFoundError(f"no service {_key_text(key)}")

    # -- immutable edits: each builds the file-format dict of the result and
    # -- runs it through parse_config, the one validator.

    def with_service(self, service: Service) -> Config:
        """This configuration plus ``service``.

        Raises ConfigError if the result is invalid (e.g. the key or name is
        taken, too many services/backends), TypeError if ``service`` is not
        a Service made of Backends.
        """
        _require_type(service, Service, "service")
        for backend in service.backends:
            _require_type(backend, Backend, "each of service.backends")
        data = self.to_dict()
        data["services"].append(service.to_dict())
        return parse_config(data, source="with_service")

    def without_service(self, key_or_name: ServiceRef) -> Config:
        """This configuration minus one service.

        Raises ConfigError if there is no such service.
        """
        data = self.to_dict()
        del data["services"][self._edit_target("without_service", key_or_name)]
        return parse_config(data, source="without_service")

    def with_backend(self, service_key_or_name: ServiceRef, backend: Backend) -> Config:
        """This configuration with ``backend`` appended to a service.

        Raises ConfigError if there is no such service, if the service
        already has a backend at ``backend.ip:backend.port``, or if the
        result is otherwise invalid (too many backends, bad values);
        TypeError if ``backend`` is not a Backend.
        """
        _require_type(backend, Backend, "backend")
        index = self._edit_target("with_backend", service_key_or_name)
        data = self.to_dict()
        data["services"][index]["backends"].append(backend.to_dict())
        return parse_config(data, source="with_backend")

    def without_backend(self, service_key_or_name: ServiceRef,
                        ip: Union[IPv4Address, str], port: int) -> Config:
        """This configuration with backend ``ip:port`` removed from a service.

        Raises ConfigError if there is no such service or backend.
        """
        operation = "without_backend"
        service_index = self._edit_target(operation, service_key_or_name)
        backend_index = self._edit_backend_target(operation, service_index, ip, port)
        data = self.to_dict()
        del data["services"][service_index]["backends"][backend_index]
        return parse_config(data, source=operation)

    def with_weight(self, service_key_or_name: ServiceRef,
                    ip: Union[IPv4Address, str], port: int, weight: int) -> Config:
        """This configuration with the weight of one backend changed.

        Raises ConfigError if there is no such service or backend, or if
        ``weight`` is not an integer in 0..65535.
        """
        operation = "with_weight"
        service_index = self._edit_target(operation, service_key_or_name)
        backend_index = self._edit_backend_target(operation, service_index, ip, port)
        data = self.to_dict()
        data["services"][service_index]["backends"][backend_index]["weight"] = weight
        return parse_config(data, source=operation)

    def _edit_target(self, operation: str, key_or_name: ServiceRef) -> int:
        try:
            return self._service_index(key_or_name)
        except NotFoundError as err:
            raise ConfigError(operation, "services", str(err)) from None

    def _edit_backend_target(self, operation: str, service_index: int,
                             ip: Union[IPv4Address, str], port: int) -> int:
        service = self.services[service_index]
        try:
            return service._backend_index(ip, port)
        except NotFoundError:
            path = (_Path().key("services").index(service_index)
                    .in_service(service.label).key("backends"))
            raise ConfigError(operation, path.field, f"no backend {ip}:{port}",
                              path.text) from None

    def to_dict(self) -> dict:
        """The configuration as plain dicts/lists/str/int in the file format.

        ``parse_config(config.to_dict()) == config`` for any valid config.
        """
        return {
            "flow_table_size": self.flow_table_size,
            "maglev_table_size": self.maglev_table_size,
            "timeouts": dataclasses.asdict(self.timeouts),
            "strict": self.strict,
            "fragments": dataclasses.asdict(self.fragments),
            "services": [service.to_dict() for service in self.services],
        }


_TOP_LEVEL_KEYS = ("flow_table_size", "maglev_table_size", "timeouts", "strict", "fragments",
                   "services")
_SERVICE_KEYS = ("name", "vip", "proto", "port", "backends")
_SERVICE_REQUIRED_KEYS = ("vip", "proto", "port")
_BACKEND_KEYS = ("ip", "port", "weight")
_BACKEND_REQUIRED_KEYS = ("ip", "port")
_TIMEOUT_KEYS = tuple(f.name for f in dataclasses.fields(Timeouts))
_FRAGMENT_KEYS = tuple(f.name for f in dataclasses.fields(Fragments))
# (low, high) of each key of `fragments`.
_FRAGMENT_RANGES = {"datagrams": (1, MAX_FRAGMENT_DATAGRAMS), "held": (0, MAX_FRAGMENT_HELD),
                    "timeout": (1, MAX_FRAGMENT_TIMEOUT)}


# --------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------


def parse_service_key(text: str) -> ServiceKey:
    """Parse ``"vip:proto:port"``, e.g. ``"10.0.0.100:tcp:80"``.

    The protocol is case-insensitive.  Raises ConfigError (source
    ``service key '<text>'``) if the text is not three ``:``-separated
    parts, or the address, protocol or port is invalid as in the file.
    """
    checker = _Checker(f"service key {text!r}")
    if not isinstance(text, str):
        checker.fail(_Path(), f"must be a string, got {_describe(text)}")
    parts = text.split(":")
    if len(parts) != 3:
        checker.fail(_Path(), "expected vip:proto:port, e.g. 10.0.0.100:tcp:80")
    vip_text, proto_text, port_text = parts
    if not re.fullmatch(r"[0-9]+", port_text):
        checker.fail(_Path().key("port"), f"{port_text!r} is not a port number")
    return ServiceKey(
        checker.ipv4(vip_text, _Path().key("vip")),
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
    """Read, parse and validate a services file.

    Raises ConfigError naming the file if it cannot be read, is not valid
    YAML (the message gives the line and column), repeats a key within one
    mapping, or fails validation (see :func:`parse_config`).
    """
    source = os.fsdecode(path)
    try:
        with open(path, "rb") as stream:
            raw = stream.read()
    except OSError as err:
        raise ConfigError(source, "", f"cannot read file: {err.strerror or err}") from err
    try:
        data = yaml.load(raw, Loader=_UniqueKeySafeLoader)  # noqa: S506 (safe loader)
    except yaml.MarkedYAMLError as err:
        raise ConfigError(source, "", _describe_yaml_error(err)) from err
    except yaml.YAMLError as err:
        raise ConfigError(source, "", f"invalid YAML: {err}") from err
    except RecursionError as err:
        raise ConfigError(source, "", "invalid YAML: nested too deeply") from err
    except ValueError as err:
        # PyYAML lets int() errors escape, e.g. for a number over 4300 digits.
        raise ConfigError(source, "", f"invalid YAML: {err}") from err
    return parse_config(data, source)


def dump_config(config: Config) -> str:
    """The services file text for ``config``; loading it gives ``config`` back."""
    # default_flow_style=None writes collections of scalars (a backend, the
    # timeouts) on one line, as people write them by hand.
    return yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=None)


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Path:
    """Where a value sits in the file.

    ``field`` is the path for programs (``services[1].backends[0].port``);
    ``head``/``tail`` make the path for people, with the service named:
    ``services[1] (dns)`` / ``backends[0].port``.
    """

    field: str = ""
    head: str = ""
    tail: str = ""

    def key(self, name: str) -> _Path:
        return _Path(_dotted(self.field, name), self.head, _dotted(self.tail, name))

    def index(self, position: int) -> _Path:
        return _Path(f"{self.field}[{position}]", self.head, f"{self.tail}[{position}]")

    def in_service(self, label: str) -> _Path:
        """This path (``services[i]``), now naming the service it points at."""
        return _Path(self.field, f"{self.text} ({label})", "")

    @property
    def text(self) -> str:
        return ": ".join(part for part in (self.head, self.tail) if part)


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
            root.key("flow_table_size"), 1, MAX_FLOW_TABLE_SIZE)
        maglev_table_size = self.maglev_table_size(
            data.get("maglev_table_size", DEFAULT_MAGLEV_TABLE_SIZE),
            root.key("maglev_table_size"))
        timeouts = self.timeouts(data.get("timeouts"), root.key("timeouts"))
        strict = data.get("strict", False)
        if not isinstance(strict, bool):
            self.fail(root.key("strict"), f"must be true or false, got {_describe(strict)}")
        fragments = self.fragments(data.get("fragments"), root.key("fragments"))
        services = self.services(data.get("services"), root.key("services"),
                                 maglev_table_size)
        return Config(services, flow_table_size, maglev_table_size, timeouts, strict, fragments)

    def maglev_table_size(self, value: Any, path: _Path) -> int:
        size = self.integer(value, path, MIN_MAGLEV_TABLE_SIZE, MAX_MAGLEV_TABLE_SIZE)
        if not _is_prime(size):
            lower = next(n for n in range(size - 1, 1, -1) if _is_prime(n))
            higher = next(n for n in range(size + 1, 2 * size) if _is_prime(n))
            self.fail(path, f"{size} is not prime (the Maglev permutation needs a "
                            f"prime table size; the nearest are {lower} and {higher})")
        return size

    def timeouts(self, data: Any, path: _Path) -> Timeouts:
        if data is None:  # "timeouts:" with nothing under it
            return Timeouts()
        self.mapping(data, path, _TIMEOUT_KEYS)
        return Timeouts(**{
            name: self.integer(data[name], path.key(name), 1, MAX_TIMEOUT)
            for name in _TIMEOUT_KEYS if name in data})

    def fragments(self, data: Any, path: _Path) -> Fragments:
        if data is None:  # "fragments:" with nothing under it
            return Fragments()
        self.mapping(data, path, _FRAGMENT_KEYS)
        return Fragments(**{
            name: self.integer(data[name], path.key(name), *_FRAGMENT_RANGES[name])
            for name in _FRAGMENT_KEYS if name in data})

    # -- services

    def services(self, data: Any, path: _Path,
                 maglev_table_size: int) -> Tuple[Service, ...]:
        if data is None:  # "services:" with nothing under it
            return ()
        items = self.sequence(data, path)
        if len(items) > MAX_SERVICES:
            self.fail(path, f"{len(items)} services, more than the limit of {MAX_SERVICES}")
        services = []
        index_by_key: dict = {}
        index_by_name: dict = {}
        backend_count = 0
        for index, item in enumerate(items):
            service_path = path.index(index)
            service = self.service(item, service_path, backend_count, maglev_table_size)
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
        return tuple(services)

    def service(self, data: Any, path: _Path, earlier_backends: int,
                maglev_table_size: int) -> Service:
        if not isinstance(data, Mapping):
            self.fail(path, f"must be a mapping, got {_describe(data)}")
        path = path.in_service(_provisional_label(data))
        self.mapping(data, path, _SERVICE_KEYS, _SERVICE_REQUIRED_KEYS)
        name = self.name(data.get("name"), path.key("name"))
        vip = self.ipv4(data["vip"], path.key("vip"))
        proto = self.protocol(data["proto"], path.key("proto"))
        port = self.integer(data["port"], path.key("port"), 1, 65535)
        backends = self.backends(data.get("backends"), path.key("backends"),
                                 earlier_backends, maglev_table_size)
        return Service(vip, proto, port, backends, name)

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
                 maglev_table_size: int) -> Tuple[Backend, ...]:
        if data is None:  # "backends:" with nothing under it
            return ()
        items = self.sequence(data, path)
        # Counted before parsing them, so that a huge list fails fast.
        if earlier_backends + len(items) > MAX_BACKENDS:
            self.fail(path, f"{len(items)} backends bring the total over all services to "
                            f"{earlier_backends + len(items)}, more than the limit of "
                            f"{MAX_BACKENDS} backends over all services")
        if len(items) > maglev_table_size:
            self.fail(path, f"{len(items)} backends do not fit in maglev_table_size "
                            f"{maglev_table_size}, which must be at least the number "
                            "of backends of every service")
        backends = []
        index_by_key: dict = {}
        for index, item in enumerate(items):
            backend_path = path.index(index)
            backend = self.backend(item, backend_path)
            if backend.key in index_by_key:
                self.fail(backend_path, f"duplicate backend {backend}, already at "
                                        f"{path.tail}[{index_by_key[backend.key]}]")
            index_by_key[backend.key] = index
            backends.append(backend)
        return tuple(backends)

    def backend(self, data: Any, path: _Path) -> Backend:
        self.mapping(data, path, _BACKEND_KEYS, _BACKEND_REQUIRED_KEYS)
        return Backend(
            self.ipv4(data["ip"], path.key("ip")),
            self.integer(data["port"], path.key("port"), 1, 65535),
            self.integer(data.get("weight", 1), path.key("weight"), 0, MAX_WEIGHT),
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
        elif isinstance(value, str):
            try:
                address = IPv4Address(value)
            except ValueError:
                self.fail(path, f"{_show(value)} is "
                          + ("an IPv6 address; only IPv4 is supported" if _is_ipv6(value)
                             else "not a valid IPv4 address"))
        elif isinstance(value, ipaddress.IPv6Address):
            self.fail(path, f"{value} is an IPv6 address; only IPv4 is supported")
        else:
            self.fail(path, f"must be an IPv4 address, got {_describe(value)}")
        if address.is_unspecified:
            self.fail(path, f"{address} is the unspecified address, not a unicast address")
        if address == _BROADCAST:
            self.fail(path, f"{address} is the broadcast address, not a unicast address")
        if address.is_multicast:
            self.fail(path, f"{address} is a multicast address, not a unicast address")
        return address

    def protocol(self, value: Any, path: _Path) -> str:
        if not isinstance(value, str):
            self.fail(path, f"must be tcp or udp, got {_describe(value)}")
        proto = value.lower()
        if proto not in PROTOCOLS:
            self.fail(path, f"unknown protocol {_show(value)} (expected tcp or udp)")
        return proto


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

    proto = part(data.get("proto"))
    return f"{part(data.get('vip'))}:{proto.lower()}:{part(data.get('port'))}"


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


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


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


class _UniqueKeySafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that rejects a key repeated within one mapping.

    Plain PyYAML keeps the last value silently, so a doubled ``port:`` in a
    service would be accepted with one of the two ports.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_line_of_key: dict = {}
        for key_node, _ in node.value:
            # A '<<' merge key may legitimately be overridden; only scalar
            # keys written twice in this very mapping are mistakes.
            if (not isinstance(key_node, yaml.ScalarNode)
                    or key_node.tag == "tag:yaml.org,2002:merge"):
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


def _describe_yaml_error(err: yaml.MarkedYAMLError) -> str:
    mark = err.problem_mark or err.context_mark
    problem = err.problem or err.context or "invalid YAML"
    context = f" ({err.context})" if err.problem and err.context else ""
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"invalid YAML{where}: {problem}{context}"
