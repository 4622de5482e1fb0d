"""Tests for rplb.config: the services file (pure Python, no DPDK)."""

from __future__ import annotations

import copy
import pickle
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rplb.config import (
    MAX_BACKENDS,
    MAX_MAGLEV_TABLE_SIZE,
    MAX_SERVICES,
    Backend,
    Config,
    ConfigError,
    NotFoundError,
    Service,
    ServiceKey,
    Timeouts,
    config_form,
    default_maglev_table_size,
    dump_config,
    load_config,
    parse_config,
    parse_service_key,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "services.yaml"


def example_data() -> dict:
    """A fresh, mutable copy of the example file's contents."""
    return yaml.safe_load(EXAMPLE.read_text())


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "services.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def backend(ip: str, port: int, weight: int = 1) -> Backend:
    return Backend(ip_address(ip), port, weight)


@pytest.fixture
def example() -> Config:
    return load_config(EXAMPLE)


# --------------------------------------------------------------------------
# The example file
# --------------------------------------------------------------------------


def test_example_file_contents(example: Config) -> None:
    assert example.flow_table_size == 65536
    assert example.maglev_table_size is None
    assert example.tables_memory_mb == 512
    assert example.timeouts == Timeouts(tcp=300, udp=60, tcp_syn=10, tcp_fin=10)
    assert [s.label for s in example.services] == ["web", "dns", "api", "web6"]
    assert [str(s.key) for s in example.services] == [
        "10.0.0.100:tcp:80", "10.0.0.100:udp:53", "10.0.0.101:tcp:443", "[fd00::100]:tcp:80"]
    web, dns, api, web6 = example.services
    assert web.backends == (backend("192.168.1.10", 8080, 10),
                            backend("192.168.1.11", 8080, 5),
                            backend("192.168.1.12", 8080, 1))
    assert dns.backends == (backend("192.168.1.20", 5353), backend("192.168.1.21", 5353))
    assert api.backends == (backend("192.168.1.30", 8443), backend("192.168.1.31", 8443))
    assert web6.family == 6 and web6.backends == (backend("fd00:1::10", 8080, 2),
                                                  backend("fd00:1::11", 8080, 1))
    assert (web.maglev_table_size, dns.maglev_table_size) == (4099, None)
    assert [example.maglev_size(s) for s in example.services] == [4099, 1009, 1009, 1009]


def test_example_round_trips(example: Config, tmp_path: Path) -> None:
    assert parse_config(example.to_dict()) == example
    path = tmp_path / "dumped.yaml"
    path.write_text(dump_config(example))
    assert load_config(path) == example


def test_to_dict_is_plain_file_format(example: Config) -> None:
    data = example.to_dict()
    assert data["services"][0] == {
        "name": "web", "vip": "10.0.0.100", "proto": "tcp", "port": 80,
        "maglev_table_size": 4099, "backends": [{"ip": "192.168.1.10", "port": 8080, "weight": 10},
                     {"ip": "192.168.1.11", "port": 8080, "weight": 5},
                     {"ip": "192.168.1.12", "port": 8080, "weight": 1}]}
    assert data["timeouts"] == {"tcp": 300, "udp": 60, "tcp_syn": 10, "tcp_fin": 10}
    # Plain data: safe_dump refuses anything else (e.g. IPv4Address).
    yaml.safe_dump(data)


# --------------------------------------------------------------------------
# Defaults and accepted spellings
# --------------------------------------------------------------------------


@pytest.mark.parametrize("data", [None, {}, {"services": None}, {"services": []},
                                  {"timeouts": None}, {"timeouts": {}}])
def test_defaults(data: Any) -> None:
    config = parse_config(data)
    assert config == Config()
    assert config.services == ()
    assert config.flow_table_size == 1048576
    assert config.maglev_table_size is None
    assert config.tables_memory_mb == 512
    assert config.timeouts == Timeouts(tcp=300, udp=60, tcp_syn=10, tcp_fin=10)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "services:\n"])
def test_empty_file_gives_defaults(tmp_path: Path, text: str) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(text)
    assert load_config(path) == Config()


def test_service_defaults_and_normalisation() -> None:
    config = parse_config({"services": [
        {"vip": "10.0.0.1", "proto": "TCP", "port": 80, "name": None},
        {"vip": "10.0.0.1", "proto": "Udp", "port": 80, "backends": None},
        {"vip": "10.0.0.2", "proto": "tcp", "port": 1,
         "backends": [{"ip": "10.1.0.1", "port": 65535}]},
    ]})
    first, second, third = config.services
    assert (first.proto, first.name, first.backends) == ("tcp", None, ())
    assert (second.proto, second.backends) == ("udp", ())
    assert third.backends == (backend("10.1.0.1", 65535, 1),)
    assert first.label == "10.0.0.1:tcp:80"


def test_partial_timeouts_keep_other_defaults() -> None:
    config = parse_config({"timeouts": {"udp": 5, "tcp_fin": 86400}})
    assert config.timeouts == Timeouts(tcp=300, udp=5, tcp_syn=10, tcp_fin=86400)


def test_limits_at_their_edges_are_accepted() -> None:
    parse_config({"flow_table_size": 1, "maglev_table_size": 3})
    parse_config({"flow_table_size": 16777216, "maglev_table_size": MAX_MAGLEV_TABLE_SIZE})
    parse_config({"timeouts": {"tcp": 1, "udp": 86400}})
    parse_config({"services": [{"vip": "10.0.0.1", "proto": "tcp", "port": 1, "backends": [
        {"ip": "10.1.0.1", "port": 1, "weight": 0},
        {"ip": "10.1.0.2", "port": 65535, "weight": 65535}]}]})


def test_same_backend_in_several_services_is_allowed(example: Config) -> None:
    shared = {"ip": "192.168.1.10", "port": 8080}
    data = example_data()
    data["services"][2]["backends"].append(shared)
    config = parse_config(data)
    assert config.service("api").backend("192.168.1.10", 8080) == backend("192.168.1.10", 8080)
    assert config.service("web").backend("192.168.1.10", 8080).weight == 10


def test_maglev_table_size_equal_to_backend_count_is_accepted() -> None:
    parse_config({"maglev_table_size": 3, "services": [
        {"vip": "10.0.0.1", "proto": "tcp", "port": 80,
         "backends": [{"ip": f"10.1.0.{i}", "port": 80} for i in range(1, 4)]}]})


# --------------------------------------------------------------------------
# Validation errors: each names the file, the service and the field
# --------------------------------------------------------------------------


def put(*path_and_value: Any) -> Callable[[dict], None]:
    """A mutation setting data[p0][p1]... = value."""
    *path, value = path_and_value

    def mutate(data: dict) -> None:
        target = data
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
    return mutate


def remove(*path: Any) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        target = data
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]
    return mutate


def both(*mutations: Callable[[dict], None]) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        for mutation in mutations:
            mutation(data)
    return mutate


WEB, DNS, API = 0, 1, 2
UNNAMED_DUPLICATE_OF_WEB = {"vip": "10.0.0.100", "proto": "tcp", "port": 80}

# (mutation of the example, ConfigError.field, where in the message, part of the problem)
INVALID_FILES = {
    # top level
    "top-level unknown key": (put("flow_table_sise", 1), "flow_table_sise", "flow_table_sise",
                              "unknown key (allowed: flow_table_size, maglev_table_size, "
                              "tables_memory_mb, timeouts, strict, fragments, health_checks, "
                              "services); did you mean 'flow_table_size'?"),
    "strict not a boolean": (put("strict", "yes"), "strict", "strict", "must be true or false"),
    "top-level non-string key": (put(7, 1), "7", "7", "unknown key"),
    "flow_table_size zero": (put("flow_table_size", 0), "flow_table_size", "flow_table_size",
                             "0 is outside 1-16777216"),
    "flow_table_size too big": (put("flow_table_size", 16777217), "flow_table_size",
                                "flow_table_size", "16777217 is outside 1-16777216"),
    "flow_table_size string": (put("flow_table_size", "1M"), "flow_table_size",
                               "flow_table_size", "must be an integer, got string '1M'"),
    "flow_table_size null": (put("flow_table_size", None), "flow_table_size",
                             "flow_table_size", "must be an integer, got null"),
    "maglev not prime": (put("maglev_table_size", 65536), "maglev_table_size",
                         "maglev_table_size", "65536 is not prime"),
    "maglev too small": (put("maglev_table_size", 2), "maglev_table_size",
                         "maglev_table_size", "2 is outside 3-1000003"),
    "maglev too big": (put("maglev_table_size", 1000033), "maglev_table_size",
                       "maglev_table_size", "1000033 is outside 3-1000003"),
    "maglev float": (put("maglev_table_size", 65537.0), "maglev_table_size",
                     "maglev_table_size", "must be an integer, got number 65537.0"),
    "maglev smaller than a service's backends": (
        both(put("maglev_table_size", 3), lambda d: d["services"][DNS]["backends"].extend(
            [{"ip": "192.168.1.22", "port": 5353}, {"ip": "192.168.1.23", "port": 5353}])),
        "services[1].backends", "services[1] (dns): backends",
        "4 backends do not fit in maglev_table_size 3"),
    "timeouts not a mapping": (put("timeouts", [300, 60]), "timeouts", "timeouts",
                               "must be a mapping, got a list"),
    "timeouts unknown key": (put("timeouts", "icmp", 5), "timeouts.icmp", "timeouts.icmp",
                             "unknown key (allowed: tcp, udp, tcp_syn, tcp_fin)"),
    "timeout zero": (put("timeouts", "tcp", 0), "timeouts.tcp", "timeouts.tcp",
                     "0 is outside 1-86400"),
    "timeout too long": (put("timeouts", "udp", 86401), "timeouts.udp", "timeouts.udp",
                         "86401 is outside 1-86400"),
    "timeout string": (put("timeouts", "tcp_syn", "10s"), "timeouts.tcp_syn", "timeouts.tcp_syn",
                       "must be an integer"),
    "timeout bool": (put("timeouts", "tcp_fin", True), "timeouts.tcp_fin", "timeouts.tcp_fin",
                     "must be an integer, got true"),
    "services not a list": (put("services", {"web": {}}), "services", "services",
                            "must be a list, got a mapping"),
    "service not a mapping": (put("services", DNS, "dns"), "services[1]", "services[1]",
                              "must be a mapping, got string 'dns'"),
    # a service
    "service unknown key": (put("services", WEB, "prot", "tcp"), "services[0].prot",
                            "services[0] (web): prot", "did you mean 'proto'?"),
    "missing vip": (remove("services", DNS, "vip"), "services[1].vip",
                    "services[1] (dns): vip", "missing required key"),
    "missing proto": (remove("services", DNS, "proto"), "services[1].proto",
                      "services[1] (dns): proto", "missing required key"),
    "missing port": (remove("services", DNS, "port"), "services[1].port",
                     "services[1] (dns): port", "missing required key"),
    "missing vip, unnamed": (both(remove("services", DNS, "vip"), remove("services", DNS, "name")),
                             "services[1].vip", "services[1] (?:udp:53): vip",
                             "missing required key"),
    "vip bad octet": (put("services", WEB, "vip", "10.0.0.300"), "services[0].vip",
                      "services[0] (web): vip", "'10.0.0.300' is not a valid IPv4 address"),
    "vip short": (put("services", WEB, "vip", "10.0.0"), "services[0].vip",
                  "services[0] (web): vip", "not a valid IPv4 address"),
    "vip with prefix": (put("services", WEB, "vip", "10.0.0.100/32"), "services[0].vip",
                        "services[0] (web): vip", "not a valid IPv4 address"),
    "vip IPv6, backends IPv4": (put("services", WEB, "vip", "2001:db8::1"),
                                "services[0].backends[0].ip",
                                "services[0] (web): backends[0].ip",
                                "is an IPv4 address but the service's vip 2001:db8::1 is IPv6"),
    "vip IPv6 link-local": (put("services", WEB, "vip", "fe80::1"), "services[0].vip",
                            "services[0] (web): vip", "fe80::1 is a link-local address"),
    "vip unspecified": (put("services", WEB, "vip", "0.0.0.0"), "services[0].vip",
                        "services[0] (web): vip", "unspecified"),
    "vip broadcast": (put("services", WEB, "vip", "255.255.255.255"), "services[0].vip",
                      "services[0] (web): vip", "broadcast"),
    "vip multicast": (put("services", WEB, "vip", "224.0.0.1"), "services[0].vip",
                      "services[0] (web): vip", "multicast"),
    "vip multicast top": (put("services", WEB, "vip", "239.255.255.250"), "services[0].vip",
                          "services[0] (web): vip", "multicast"),
    "vip integer": (put("services", WEB, "vip", 167772160), "services[0].vip",
                    "services[0] (web): vip",
                    "must be an IPv4 or IPv6 address, got integer 167772160"),
    "vip unnamed": (both(remove("services", API, "name"), put("services", API, "vip", "10.0.0")),
                    "services[2].vip", "services[2] (10.0.0:tcp:443): vip",
                    "not a valid IPv4 address"),
    "unknown proto": (put("services", DNS, "proto", "sctp"), "services[1].proto",
                      "services[1] (dns): proto", "unknown protocol 'sctp' (expected tcp or udp)"),
    "proto number": (put("services", DNS, "proto", 17), "services[1].proto",
                     "services[1] (dns): proto", "must be tcp or udp, got integer 17"),
    "service port zero": (put("services", API, "port", 0), "services[2].port",
                          "services[2] (api): port", "0 is outside 1-65535"),
    "service port too big": (put("services", API, "port", 65536), "services[2].port",
                             "services[2] (api): port", "65536 is outside 1-65535"),
    "service port string": (put("services", API, "port", "443"), "services[2].port",
                            "services[2] (api): port", "must be an integer, got string '443'"),
    "service port bool": (put("services", API, "port", True), "services[2].port",
                          "services[2] (api): port", "must be an integer, got true"),
    "service port float": (put("services", API, "port", 443.0), "services[2].port",
                           "services[2] (api): port", "must be an integer, got number 443.0"),
    "name with space": (put("services", API, "name", "my api"), "services[2].name",
                        "services[2] (10.0.0.101:tcp:443): name",
                        "may contain only letters, digits"),
    "name with colon": (put("services", API, "name", "api:v2"), "services[2].name",
                        "services[2] (10.0.0.101:tcp:443): name",
                        "may contain only letters, digits"),
    "name too long": (put("services", API, "name", "a" * 64), "services[2].name",
                      "services[2] (10.0.0.101:tcp:443): name", "must be 1-63 characters long"),
    "name empty": (put("services", API, "name", ""), "services[2].name",
                   "services[2] (10.0.0.101:tcp:443): name", "must be 1-63 characters long"),
    "name number": (put("services", API, "name", 443), "services[2].name",
                    "services[2] (10.0.0.101:tcp:443): name", "must be a string, got integer 443"),
    "duplicate name": (put("services", API, "name", "web"), "services[2].name",
                       "services[2] (web): name",
                       "duplicate name 'web', already used by services[0]"),
    "duplicate service": (put("services", API, UNNAMED_DUPLICATE_OF_WEB), "services[2]",
                          "services[2] (10.0.0.100:tcp:80)",
                          "duplicate service, already defined at services[0] (web)"),
    "duplicate service, proto case": (
        put("services", API, {**UNNAMED_DUPLICATE_OF_WEB, "proto": "TCP", "name": "web2"}),
        "services[2]", "services[2] (web2)", "already defined at services[0] (web)"),
    "backends not a list": (put("services", DNS, "backends", "192.168.1.20"),
                            "services[1].backends", "services[1] (dns): backends",
                            "must be a list, got string '192.168.1.20'"),
    # a backend
    "backend not a mapping": (put("services", DNS, "backends", 0, "192.168.1.20:5353"),
                              "services[1].backends[0]", "services[1] (dns): backends[0]",
                              "must be a mapping, got string '192.168.1.20:5353'"),
    "backend unknown key": (put("services", DNS, "backends", 1, "wieght", 3),
                            "services[1].backends[1].wieght",
                            "services[1] (dns): backends[1].wieght",
                            "unknown key (allowed: ip, port, weight); did you mean 'weight'?"),
    "backend missing ip": (remove("services", DNS, "backends", 1, "ip"),
                           "services[1].backends[1].ip", "services[1] (dns): backends[1].ip",
                           "missing required key"),
    "backend missing port": (remove("services", DNS, "backends", 1, "port"),
                             "services[1].backends[1].port", "services[1] (dns): backends[1].port",
                             "missing required key"),
    "backend bad ip": (put("services", WEB, "backends", 2, "ip", "192.168.1.256"),
                       "services[0].backends[2].ip", "services[0] (web): backends[2].ip",
                       "'192.168.1.256' is not a valid IPv4 address"),
    "backend IPv6": (put("services", WEB, "backends", 2, "ip", "fe80::1"),
                     "services[0].backends[2].ip", "services[0] (web): backends[2].ip",
                     "fe80::1 is an IPv6 address but the service's vip 10.0.0.100 is IPv4"),
    "backend multicast": (put("services", WEB, "backends", 2, "ip", "230.1.2.3"),
                          "services[0].backends[2].ip", "services[0] (web): backends[2].ip",
                          "multicast"),
    "backend port too big": (put("services", DNS, "backends", 0, "port", 70000),
                             "services[1].backends[0].port", "services[1] (dns): backends[0].port",
                             "70000 is outside 1-65535"),
    "backend port zero": (put("services", DNS, "backends", 0, "port", 0),
                          "services[1].backends[0].port", "services[1] (dns): backends[0].port",
                          "0 is outside 1-65535"),
    "backend port string": (put("services", DNS, "backends", 0, "port", "5353"),
                            "services[1].backends[0].port", "services[1] (dns): backends[0].port",
                            "must be an integer, got string '5353'"),
    "weight negative": (put("services", WEB, "backends", 1, "weight", -1),
                        "services[0].backends[1].weight", "services[0] (web): backends[1].weight",
                        "-1 is outside 0-65535"),
    "weight too big": (put("services", WEB, "backends", 1, "weight", 65536),
                       "services[0].backends[1].weight", "services[0] (web): backends[1].weight",
                       "65536 is outside 0-65535"),
    "weight string": (put("services", WEB, "backends", 1, "weight", "5"),
                      "services[0].backends[1].weight", "services[0] (web): backends[1].weight",
                      "must be an integer, got string '5'"),
    "weight float": (put("services", WEB, "backends", 1, "weight", 0.5),
                     "services[0].backends[1].weight", "services[0] (web): backends[1].weight",
                     "must be an integer, got number 0.5"),
    "weight null": (put("services", WEB, "backends", 1, "weight", None),
                    "services[0].backends[1].weight", "services[0] (web): backends[1].weight",
                    "must be an integer, got null"),
    "duplicate backend": (put("services", WEB, "backends", 2, "ip", "192.168.1.10"),
                          "services[0].backends[2]", "services[0] (web): backends[2]",
                          "duplicate backend 192.168.1.10:8080, already at backends[0]"),
}


@pytest.mark.parametrize("mutate, field, where, problem", INVALID_FILES.values(),
                         ids=INVALID_FILES.keys())
def test_invalid_file_is_reported_with_file_service_and_field(
        tmp_path: Path, mutate: Callable[[dict], None], field: str, where: str,
        problem: str) -> None:
    data = example_data()
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    err = caught.value
    message = str(err)
    assert message.startswith(f"{path}: {where}: "), message
    assert problem in err.problem, message
    assert message == f"{path}: {where}: {err.problem}"
    assert "\n" not in message
    assert (err.source, err.field, err.where) == (str(path), field, where)


def test_messages_quoted_in_the_spec() -> None:
    data = example_data()
    data["services"][DNS]["backends"][0]["port"] = 70000
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "services.yaml")
    assert str(caught.value) == (
        "services.yaml: services[1] (dns): backends[0].port: 70000 is outside 1-65535")
    assert caught.value.field == "services[1].backends[0].port"
    assert caught.value.problem == "70000 is outside 1-65535"

    data = example_data()
    data["services"][API] = dict(UNNAMED_DUPLICATE_OF_WEB)
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "services.yaml")
    assert str(caught.value) == (
        "services.yaml: services[2] (10.0.0.100:tcp:80): "
        "duplicate service, already defined at services[0] (web)")


@pytest.mark.parametrize("data", [[], "services", 42])
def test_top_level_must_be_a_mapping(data: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "services.yaml")
    assert str(caught.value).startswith("services.yaml: the top level must be a mapping, got ")
    assert caught.value.field == ""


def test_too_many_services() -> None:
    services = [{"vip": "10.0.0.1", "proto": "tcp", "port": port}
                for port in range(1, MAX_SERVICES + 2)]
    parse_config({"services": services[:MAX_SERVICES]})
    with pytest.raises(ConfigError) as caught:
        parse_config({"services": services}, "services.yaml")
    assert str(caught.value) == (f"services.yaml: services: {MAX_SERVICES + 1} services, "
                                 f"more than the limit of {MAX_SERVICES}")


def test_too_many_backends_over_all_services() -> None:
    def service(name: str, count: int, port: int, first: int) -> dict:
        return {"name": name, "vip": "10.0.0.1", "proto": "tcp", "port": port,
                "backends": [{"ip": str(IPv4Address("10.1.0.1") + first + i), "port": 80}
                             for i in range(count)]}

    half = MAX_BACKENDS // 2
    at_limit = [service("a", half, 1, 0), service("b", MAX_BACKENDS - half, 2, half)]
    config = parse_config({"services": at_limit})
    assert sum(len(s.backends) for s in config.services) == MAX_BACKENDS
    over = [service("a", half, 1, 0), service("b", MAX_BACKENDS - half + 1, 2, half)]
    with pytest.raises(ConfigError) as caught:
        parse_config({"services": over}, "services.yaml")
    err = caught.value
    assert err.field == "services[1].backends"
    assert str(err).startswith("services.yaml: services[1] (b): backends: ")
    assert str(MAX_BACKENDS + 1) in err.problem
    assert f"limit of {MAX_BACKENDS} backends over all services" in err.problem
    # An edit is held to the same total.
    with pytest.raises(ConfigError, match=f"limit of {MAX_BACKENDS} backends"):
        config.with_backend("a", backend("10.200.0.1", 80))


# --------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "services.yaml"
    path.write_text("services:\n  - vip: 10.0.0.1\n    proto: [tcp\n    port: 80\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: invalid YAML at line ")
    assert "line 4" in message
    assert "\n" not in message


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "services.yaml"
    path.write_text("services:\n  - vip: 10.0.0.1\n    proto: tcp\n    port: 80\n    port: 81\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}: invalid YAML at line 5, column 5: duplicate key 'port' (first at line 4)")


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    path = tmp_path / "services.yaml"
    path.write_text("services:\n"
                    "  - &web {name: web, vip: 10.0.0.1, proto: tcp, port: 80}\n"
                    "  - {<<: *web, name: alt, port: 81}\n")
    config = load_config(path)
    assert str(config.service("alt").key) == "10.0.0.1:tcp:81"


@pytest.mark.parametrize("content", [
    b"services: !!python/object:os.system {}\n",
    b"services:\n  - name: caf\xe9\n",
    b"flow_table_size: " + b"9" * 5000 + b"\n",
    b"[" * 5000 + b"]" * 5000 + b"\n",
], ids=["unsafe tag", "not UTF-8", "int() refuses 5000 digits", "nested too deeply"])
def test_unloadable_yaml_is_a_config_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "services.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: invalid YAML")
    assert "\n" not in str(caught.value)


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert str(caught.value) == f"{missing}: cannot read file: No such file or directory"
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path}: cannot read file: ")


def test_load_accepts_str_path() -> None:
    assert load_config(str(EXAMPLE)) == load_config(EXAMPLE)


def test_config_error_attributes_and_pickling() -> None:
    err = ConfigError("f.yaml", "services[0].port", "bad\nport", "services[0] (web): port")
    assert str(err) == "f.yaml: services[0] (web): port: bad port"
    assert isinstance(err, ValueError)
    copy_ = pickle.loads(pickle.dumps(err))
    assert (str(copy_), copy_.field, copy_.where) == (str(err), err.field, err.where)


# --------------------------------------------------------------------------
# Keys and lookups
# --------------------------------------------------------------------------


def test_parse_service_key() -> None:
    key = parse_service_key("10.0.0.100:TCP:80")
    assert key == ServiceKey(IPv4Address("10.0.0.100"), "tcp", 80)
    assert str(key) == "10.0.0.100:tcp:80"
    assert (key.vip, key.proto, key.port) == (IPv4Address("10.0.0.100"), "tcp", 80)


@pytest.mark.parametrize("text, problem", [
    ("10.0.0.100:tcp", "expected vip:proto:port"),
    ("10.0.0.100:tcp:80:1", "expected vip:proto:port"),
    ("10.0.0.100:tcp:http", "'http' is not a port number"),
    ("10.0.0.100:tcp:-1", "not a port number"),
    ("10.0.0.100:tcp:", "not a port number"),
    ("10.0.0.100:tcp:0", "0 is outside 1-65535"),
    ("10.0.0.100:tcp:65536", "65536 is outside 1-65535"),
    ("10.0.0.100:icmp:80", "unknown protocol 'icmp'"),
    ("10.0.0.256:tcp:80", "not a valid IPv4 address"),
    ("224.0.0.5:udp:80", "multicast"),
    ("", "expected vip:proto:port"),
])
def test_parse_service_key_errors(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_service_key(text)
    assert str(caught.value).startswith(f"service key {text!r}: ")
    assert problem in caught.value.problem


def test_service_lookup(example: Config) -> None:
    web = example.services[0]
    assert example.service("web") is web
    assert example.service("10.0.0.100:tcp:80") is web
    assert example.service("10.0.0.100:TCP:80") is web
    assert example.service(web.key) is web
    assert example.service(ServiceKey(IPv4Address("10.0.0.100"), "udp", 53)).name == "dns"


@pytest.mark.parametrize("ref, message", [
    ("www", "no service named 'www'"),
    ("10.0.0.100:tcp:81", "no service 10.0.0.100:tcp:81"),
    ("10.0.0.100:tcp:x", "no service '10.0.0.100:tcp:x' ('x' is not a port number)"),
    (ServiceKey(IPv4Address("10.0.0.9"), "tcp", 80), "no service 10.0.0.9:tcp:80"),
])
def test_service_lookup_failure(example: Config, ref: Any, message: str) -> None:
    with pytest.raises(KeyError) as caught:
        example.service(ref)
    assert isinstance(caught.value, NotFoundError)
    assert str(caught.value) == message


def test_service_lookup_wrong_type(example: Config) -> None:
    with pytest.raises(TypeError):
        example.service(80)  # type: ignore[arg-type]


def test_service_and_backend_helpers(example: Config) -> None:
    web = example.service("web")
    first = web.backend("192.168.1.10", 8080)
    assert first is web.backends[0]
    assert web.backend(IPv4Address("192.168.1.10"), 8080) is first
    assert first.key == (IPv4Address("192.168.1.10"), 8080)
    assert str(first) == "192.168.1.10:8080"
    for ip, port in [("192.168.1.10", 8081), ("192.168.1.99", 8080), ("nonsense", 1)]:
        with pytest.raises(KeyError, match="service web has no backend"):
            web.backend(ip, port)
    unnamed = Service(IPv4Address("10.0.0.1"), "udp", 53)
    assert unnamed.label == "10.0.0.1:udp:53" and unnamed.backends == ()


# --------------------------------------------------------------------------
# Immutable edits
# --------------------------------------------------------------------------


NEW_SERVICE = Service(IPv4Address("10.0.0.102"), "udp", 123,
                      (backend("192.168.1.40", 123, 2),), name="ntp")


def test_with_service(example: Config) -> None:
    edited = example.with_service(NEW_SERVICE)
    assert edited.services == example.services + (NEW_SERVICE,)
    assert edited.service("ntp") == NEW_SERVICE
    assert example == load_config(EXAMPLE)


def test_with_service_validates_and_normalises() -> None:
    # Built by hand with text where the dataclass wants objects: the
    # validator turns it into the canonical form.
    loose = Service("10.0.0.1", "UDP", 53)  # type: ignore[arg-type]
    assert Config().with_service(loose).services == (
        Service(IPv4Address("10.0.0.1"), "udp", 53),)


@pytest.mark.parametrize("service, where, problem", [
    (Service(IPv4Address("10.0.0.100"), "tcp", 80), "services[4] (10.0.0.100:tcp:80)",
     "duplicate service, already defined at services[0] (web)"),
    (Service(IPv4Address("10.0.0.100"), "tcp", 8080, name="dns"), "services[4] (dns): name",
     "duplicate name 'dns', already used by services[1]"),
    (Service(IPv4Address("10.0.0.100"), "tcp", 0, name="zero"), "services[4] (zero): port",
     "0 is outside 1-65535"),
    (Service(IPv4Address("224.0.0.1"), "tcp", 80), "services[4] (224.0.0.1:tcp:80): vip",
     "multicast"),
    (Service(IPv4Address("10.0.0.1"), "sctp", 80), "services[4] (10.0.0.1:sctp:80): proto",
     "unknown protocol"),
    (Service(IPv4Address("10.0.0.1"), "tcp", 80, (backend("10.1.0.1", 1), backend("10.1.0.1", 1))),
     "services[4] (10.0.0.1:tcp:80): backends[1]", "duplicate backend 10.1.0.1:1"),
])
def test_with_service_errors(example: Config, service: Service, where: str,
                             problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        example.with_service(service)
    assert str(caught.value).startswith(f"with_service: {where}: ")
    assert problem in caught.value.problem
    assert example == load_config(EXAMPLE)


def test_with_service_wrong_type(example: Config) -> None:
    with pytest.raises(TypeError):
        example.with_service({"vip": "10.0.0.1"})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        example.with_service(Service(IPv4Address("10.0.0.1"), "tcp", 80,
                                     ({"ip": "10.1.0.1", "port": 1},)))  # type: ignore[arg-type]


@pytest.mark.parametrize("ref", ["dns", "10.0.0.100:udp:53",
                                 ServiceKey(IPv4Address("10.0.0.100"), "udp", 53)])
def test_without_service(example: Config, ref: Any) -> None:
    edited = example.without_service(ref)
    assert [s.label for s in edited.services] == ["web", "api", "web6"]
    assert len(example.services) == 4


def test_without_service_missing(example: Config) -> None:
    with pytest.raises(ConfigError) as caught:
        example.without_service("ntp")
    assert str(caught.value) == "without_service: services: no service named 'ntp'"
    with pytest.raises(ConfigError, match="no service 10.0.0.1:tcp:80"):
        example.without_service("10.0.0.1:tcp:80")
    assert example == load_config(EXAMPLE)


def test_without_last_service(example: Config) -> None:
    edited = (example.without_service("web").without_service("dns").without_service("api")
              .without_service("web6"))
    assert edited == Config(flow_table_size=65536)


def test_with_backend(example: Config) -> None:
    new = backend("192.168.1.13", 8080, 0)
    edited = example.with_backend("web", new)
    assert edited.service("web").backends == example.service("web").backends + (new,)
    assert edited.service("dns") is not None and edited.service("api") == example.service("api")
    assert len(example.service("web").backends) == 3


def test_with_backend_into_empty_service() -> None:
    config = parse_config({"services": [{"vip": "10.0.0.1", "proto": "tcp", "port": 80}]})
    edited = config.with_backend("10.0.0.1:tcp:80", backend("10.1.0.1", 80))
    assert edited.services[0].backends == (backend("10.1.0.1", 80),)


@pytest.mark.parametrize("ref, new, message", [
    ("web", backend("192.168.1.11", 8080, 3),
     "with_backend: services[0] (web): backends[3]: "
     "duplicate backend 192.168.1.11:8080, already at backends[1]"),
    ("dns", backend("192.168.1.22", 5353, 70000),
     "with_backend: services[1] (dns): backends[2].weight: 70000 is outside 0-65535"),
    ("dns", backend("255.255.255.255", 5353),
     "with_backend: services[1] (dns): backends[2].ip: "
     "255.255.255.255 is the broadcast address, not a unicast address"),
    ("ntp", backend("192.168.1.40", 123),
     "with_backend: services: no service named 'ntp'"),
])
def test_with_backend_errors(example: Config, ref: str, new: Backend, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        example.with_backend(ref, new)
    assert str(caught.value) == message
    assert example == load_config(EXAMPLE)


def test_with_backend_respects_maglev_table_size() -> None:
    config = parse_config({"maglev_table_size": 3, "services": [
        {"name": "s", "vip": "10.0.0.1", "proto": "tcp", "port": 80,
         "backends": [{"ip": f"10.1.0.{i}", "port": 80} for i in range(1, 4)]}]})
    with pytest.raises(ConfigError, match="4 backends do not fit in maglev_table_size 3"):
        config.with_backend("s", backend("10.1.0.4", 80))


def test_with_backend_wrong_type(example: Config) -> None:
    with pytest.raises(TypeError):
        example.with_backend("web", ("192.168.1.13", 8080))  # type: ignore[arg-type]


def test_without_backend(example: Config) -> None:
    edited = example.without_backend("web", "192.168.1.11", 8080)
    assert [str(b) for b in edited.service("web").backends] == [
        "192.168.1.10:8080", "192.168.1.12:8080"]
    emptied = (edited.without_backend("web", IPv4Address("192.168.1.10"), 8080)
               .without_backend("web", "192.168.1.12", 8080))
    assert emptied.service("web").backends == ()
    assert len(example.service("web").backends) == 3


@pytest.mark.parametrize("ref, ip, port, message", [
    ("web", "192.168.1.11", 9090,
     "without_backend: services[0] (web): backends: no backend 192.168.1.11:9090"),
    ("web", "192.168.1.20", 5353,
     "without_backend: services[0] (web): backends: no backend 192.168.1.20:5353"),
    ("ntp", "192.168.1.11", 8080, "without_backend: services: no service named 'ntp'"),
])
def test_without_backend_errors(example: Config, ref: str, ip: str, port: int,
                                message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        example.without_backend(ref, ip, port)
    assert str(caught.value) == message
    assert example == load_config(EXAMPLE)


@pytest.mark.parametrize("weight", [0, 1, 65535])
def test_with_weight(example: Config, weight: int) -> None:
    edited = example.with_weight("10.0.0.100:tcp:80", "192.168.1.11", 8080, weight)
    assert edited.service("web").backend("192.168.1.11", 8080).weight == weight
    assert edited.service("web").backends[0] == example.service("web").backends[0]
    assert example.service("web").backend("192.168.1.11", 8080).weight == 5


@pytest.mark.parametrize("ref, ip, port, weight, message", [
    ("web", "192.168.1.11", 8080, 65536,
     "with_weight: services[0] (web): backends[1].weight: 65536 is outside 0-65535"),
    ("web", "192.168.1.11", 8080, -1,
     "with_weight: services[0] (web): backends[1].weight: -1 is outside 0-65535"),
    ("web", "192.168.1.11", 8080, "5",
     "with_weight: services[0] (web): backends[1].weight: must be an integer, got string '5'"),
    ("web", "192.168.1.11", 8080, True,
     "with_weight: services[0] (web): backends[1].weight: must be an integer, got true"),
    ("web", "192.168.1.99", 8080, 1,
     "with_weight: services[0] (web): backends: no backend 192.168.1.99:8080"),
    ("api", "not-an-ip", 8443, 1,
     "with_weight: services[2] (api): backends: no backend not-an-ip:8443"),
    ("10.0.0.9:tcp:80", "192.168.1.11", 8080, 1,
     "with_weight: services: no service 10.0.0.9:tcp:80"),
])
def test_with_weight_errors(example: Config, ref: str, ip: str, port: int, weight: Any,
                            message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        example.with_weight(ref, ip, port, weight)
    assert str(caught.value) == message
    assert example == load_config(EXAMPLE)


def test_edits_chain_and_round_trip(example: Config) -> None:
    edited = (example.with_service(NEW_SERVICE)
              .with_backend("ntp", backend("192.168.1.41", 123))
              .with_weight("ntp", "192.168.1.40", 123, 0)
              .without_service("dns"))
    assert parse_config(yaml.safe_load(dump_config(edited))) == edited
    assert [str(s.key) for s in edited.services] == [
        "10.0.0.100:tcp:80", "10.0.0.101:tcp:443", "[fd00::100]:tcp:80", "10.0.0.102:udp:123"]


# --------------------------------------------------------------------------
# Maglev table sizes and the tables' memory
# --------------------------------------------------------------------------


def many_services(count: int, backends: int, **extra: Any) -> list:
    return [{"vip": str(IPv4Address("10.0.0.1") + i), "proto": "tcp", "port": 80, **extra,
             "backends": [{"ip": str(IPv4Address("10.128.0.1") + i * backends + j), "port": 80}
                          for j in range(backends)]} for i in range(count)]


def test_default_maglev_size_follows_the_backend_count() -> None:
    """At least 100 entries a backend, prime, on a ladder doubling from
    1009 (most edits keep the size), at most the largest size."""
    sizes = {n: default_maglev_table_size(n) for n in (0, 1, 10, 11, 20, 21, 1000, 5000, 10000,
                                                       MAX_BACKENDS)}
    assert sizes[0] == sizes[1] == sizes[10] == 1009
    assert sizes[11] == sizes[20] == 2003 and sizes[21] == 4001
    assert sizes[1000] == 128021 and sizes[5000] == 512009
    assert sizes[10000] == sizes[MAX_BACKENDS] == MAX_MAGLEV_TABLE_SIZE
    for n, size in sizes.items():
        assert size >= min(100 * n, MAX_MAGLEV_TABLE_SIZE)
        assert all(size % d for d in range(2, int(size ** 0.5) + 1))


def test_maglev_size_precedence() -> None:
    """A service's own size, else the file's, else the default."""
    services = many_services(3, 2)
    services[0]["maglev_table_size"] = 13
    derived = parse_config({"services": services})
    assert [derived.maglev_size(s) for s in derived.services] == [13, 1009, 1009]
    fixed = parse_config({"maglev_table_size": 251, "services": services})
    assert [fixed.maglev_size(s) for s in fixed.services] == [13, 251, 251]
    assert parse_config(fixed.to_dict()) == fixed
    assert fixed.services[0].to_dict()["maglev_table_size"] == 13


@pytest.mark.parametrize("size, problem", [
    (12, "12 is not prime (the Maglev permutation needs a prime table size; "
         "the nearest are 11 and 13)"),
    (2, "2 is outside 3-1000003"),
    ("13", "must be an integer, got string '13'"),
])
def test_service_maglev_size_is_validated(size: Any, problem: str) -> None:
    services = many_services(2, 2)
    services[1]["maglev_table_size"] = size
    with pytest.raises(ConfigError) as caught:
        parse_config({"services": services}, "f.yaml")
    assert str(caught.value) == (
        f"f.yaml: services[1] (10.0.0.2:tcp:80): maglev_table_size: {problem}")


def test_service_maglev_size_must_hold_its_backends() -> None:
    services = many_services(1, 4, maglev_table_size=3)
    with pytest.raises(ConfigError, match="4 backends do not fit in the service's "
                                          "maglev_table_size 3"):
        parse_config({"services": services})
    # Its own size wins over a file's size that would not fit.
    config = parse_config({"maglev_table_size": 3, "services": many_services(1, 5,
                                                                            maglev_table_size=5)})
    with pytest.raises(ConfigError, match="6 backends do not fit in the service's "
                                          "maglev_table_size 5"):
        config.with_backend("10.0.0.1:tcp:80", backend("10.99.0.1", 80))


def test_tables_over_the_memory_budget_are_refused_with_the_figure() -> None:
    """Nothing lets services x Maglev size ask for gigabytes unchecked."""
    data = {"maglev_table_size": MAX_MAGLEV_TABLE_SIZE, "services": many_services(200, 1)}
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "big.yaml")
    err = caught.value
    assert err.field == "tables_memory_mb"
    assert str(err).startswith("big.yaml: tables_memory_mb: the load-balancing tables "
                               "would need ")
    need = float(err.problem.split("would need ")[1].split(" MiB")[0].replace(",", ""))
    # Twice (a reload rebuilds them all) 200 x 1000003 entries of 4 bytes,
    # and two generations of the rest.
    assert 2 * 763 < need < 2 * 800
    assert "more than tables_memory_mb 512" in err.problem
    assert "200,000,600 entries" in err.problem
    # The budget is the file's to raise.
    raised = parse_config({**data, "tables_memory_mb": 2048})
    assert raised.tables_memory() / 2**20 == pytest.approx(need, abs=0.1)


def test_edits_are_held_to_the_memory_budget() -> None:
    # 15 tables of 1000003 entries (3.8 MiB each), twice, and two
    # generations fit in the budget; a 16th does not.
    from rplb import contract

    def need(services: int) -> int:
        return 2 * (services * contract.maglev_memory(1000003, 1)
                    + contract.tables_memory(services, services))
    budget = -(-need(15) // (1 << 20))
    assert need(16) > budget << 20
    config = parse_config({"tables_memory_mb": budget, "maglev_table_size": 1000003,
                           "services": many_services(15, 1)})
    assert config.tables_memory() == need(15) <= budget << 20
    with pytest.raises(ConfigError, match="tables_memory_mb: the load-balancing tables "
                                          f"would need .* more than tables_memory_mb {budget}"):
        config.with_service(Service(IPv4Address("10.9.9.9"), "udp", 53,
                                    (backend("10.99.0.1", 53),)))
    # A service without backends has no Maglev table: it fits.
    empty = config.with_service(Service(IPv4Address("10.9.9.9"), "udp", 53))
    with pytest.raises(ConfigError, match=f"more than tables_memory_mb {budget}"):
        empty.with_backend("10.9.9.9:udp:53", backend("10.99.0.1", 53))
    assert empty.without_service("10.0.0.1:tcp:80").with_backend(
        "10.9.9.9:udp:53", backend("10.99.0.1", 53)).tables_memory() <= budget << 20


def test_tables_memory_mb_is_validated() -> None:
    for value, problem in ((0, "0 is outside 1-1048576"), ("1G", "must be an integer")):
        with pytest.raises(ConfigError, match=problem):
            parse_config({"tables_memory_mb": value})


def test_edits_validate_only_what_they_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """An edit checks its service and the totals: the whole file is never
    validated again (its cost would grow with the number of services)."""
    config = parse_config({"services": many_services(50, 2)})
    import rplb.config as module

    def no_full_validation(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an edit re-validated the whole file")
    monkeypatch.setattr(module._Checker, "config", no_full_validation)
    monkeypatch.setattr(module._Checker, "services", no_full_validation)
    edited = (config.with_backend("10.0.0.3:tcp:80", backend("10.99.0.1", 80))
              .with_weight("10.0.0.3:tcp:80", "10.99.0.1", 80, 7)
              .without_backend("10.0.0.4:tcp:80", "10.128.0.7", 80)
              .with_service(Service(IPv4Address("10.9.9.9"), "udp", 53, name="dns"))
              .without_service("10.0.0.1:tcp:80"))
    monkeypatch.undo()
    # ... and the result is what a full validation gives.
    assert parse_config(edited.to_dict()) == edited
    assert edited.tables_memory() == parse_config(edited.to_dict()).tables_memory()
    assert edited.service("dns").key == ServiceKey(IPv4Address("10.9.9.9"), "udp", 53)


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z0-9_.-]{1,63}", fullmatch=True)
unicast = st.ip_addresses(v=4).filter(
    lambda a: not (a.is_multicast or a.is_unspecified or a == IPv4Address("255.255.255.255")))
backend_objects = st.builds(Backend, unicast, st.integers(1, 65535), st.integers(0, 65535))
# IPv6 addresses a backend may have: not unspecified, loopback, multicast
# or IPv4-mapped; a VIP's: not link-local either.  A few fixed ones too, so
# that services and backends sometimes share addresses across families.
unicast6 = st.one_of(
    st.ip_addresses(v=6).filter(lambda a: not (
        a.is_multicast or a.is_unspecified or a.is_loopback or a.ipv4_mapped is not None)),
    st.sampled_from([IPv6Address("fd00::100"), IPv6Address("::a00:64"),
                     IPv6Address("fe80::1")]))
unicast6_vip = unicast6.filter(lambda a: not a.is_link_local)
backend6_objects = st.builds(Backend, unicast6, st.integers(1, 65535), st.integers(0, 65535))


@st.composite
def valid_configs(draw: st.DrawFn) -> Config:
    """Valid configurations, of IPv4 and IPv6 services (each service's
    backends in its VIP's family)."""
    keys = draw(st.lists(st.tuples(st.one_of(unicast, unicast6_vip),
                                   st.sampled_from(["tcp", "udp"]),
                                   st.integers(1, 65535)), unique=True, max_size=4))
    service_names = draw(st.lists(st.one_of(st.none(), names), min_size=len(keys),
                                  max_size=len(keys)).filter(
        lambda ns: len([n for n in ns if n]) == len({n for n in ns if n})))
    services = tuple(
        Service(vip, proto, port,
                tuple(draw(st.lists(backend6_objects if vip.version == 6 else backend_objects,
                                    unique_by=lambda b: b.key, max_size=5))),
                name)
        for (vip, proto, port), name in zip(keys, service_names))
    return Config(
        services,
        draw(st.integers(1, 1 << 24)),
        draw(st.sampled_from([5, 7, 251, 65537, 1000003])),
        draw(st.builds(Timeouts, *[st.integers(1, 86400)] * 4)),
    )


@settings(max_examples=200, deadline=None)
@given(valid_configs())
def test_valid_configs_round_trip_through_dict_and_yaml(config: Config) -> None:
    assert parse_config(config.to_dict()) == config
    assert parse_config(yaml.safe_load(dump_config(config))) == config


# Values a mutation may put anywhere: wrong types, edge values, near misses.
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 70000), st.integers(), st.floats(),
    st.text(max_size=10), st.ip_addresses(v=4).map(str),
    st.sampled_from(["0.0.0.0", "255.255.255.255", "224.0.0.1", "::1", "10.0.0", "10.0.0.256",
                     "010.0.0.1", "10.0.0.1/8", "tcp", "UDP", "sctp", "web", "80", "a" * 64,
                     "x:y", 0, 3, 4, 65535, 65536, 65537, 86400, 86401, 1 << 24, (1 << 24) + 1,
                     "fd00::1", "FD00:0::0001", "[fd00::1]", "fe80::1", "fe80::1%eth0",
                     "::ffff:10.0.0.1", "ff02::1", "::", "fd00:::1", "[fd00::1]:tcp:80"]),
    st.ip_addresses(v=6).map(str),
)
anything = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.one_of(st.text(max_size=6), st.integers()), inner, max_size=3)),
    max_leaves=8)
stray_keys = st.one_of(st.sampled_from(
    ["name", "vip", "proto", "port", "backends", "ip", "weight", "wieght", "tcp", "icmp",
     "services", "timeouts", "flow_table_size", "maglev_table_size"]), st.text(max_size=6))


def containers(data: Any) -> list:
    """Every dict and list inside data (data included)."""
    found = [data] if isinstance(data, (dict, list)) else []
    children = data.values() if isinstance(data, dict) else data if isinstance(data, list) else []
    for child in children:
        found.extend(containers(child))
    return found


@st.composite
def near_valid_documents(draw: st.DrawFn) -> Any:
    """A valid file's data with a few random changes: values replaced, keys added or removed."""
    data = draw(valid_configs()).to_dict()
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(containers(data)))
        if isinstance(target, dict):
            action = draw(st.sampled_from(["replace", "add", "remove"]))
            if action == "add" or not target:
                target[draw(stray_keys)] = draw(anything)
            elif action == "remove":
                del target[draw(st.sampled_from(sorted(target, key=str)))]
            else:
                target[draw(st.sampled_from(sorted(target, key=str)))] = draw(anything)
        elif target:
            position = draw(st.integers(0, len(target) - 1))
            target[position] = draw(st.one_of(anything, st.just(copy.deepcopy(target[0]))))
        else:
            target.append(draw(anything))
    return data


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(near_valid_documents(), anything))
def test_parse_config_returns_config_or_raises_config_error(data: Any) -> None:
    snapshot = copy.deepcopy(data)
    try:
        config = parse_config(data, "fuzz.yaml")
    except ConfigError as err:
        message = str(err)
        assert message.startswith("fuzz.yaml: ")
        assert "\n" not in message
        assert err.problem
    else:
        assert isinstance(config, Config)
        assert parse_config(config.to_dict()) == config
    assert data == snapshot  # never mutated (deepcopy keeps NaN objects, so == holds)


# --------------------------------------------------------------------------
# JSON services files
# --------------------------------------------------------------------------


def test_a_json_file_loads_like_its_yaml(example: Config, tmp_path: Path) -> None:
    path = tmp_path / "services.json"
    path.write_text(dump_config(example, "json"))
    assert load_config(path) == example
    assert path.read_text().count("\n") == 2 + len(example.services)   # a service a line
    empty = tmp_path / "empty.json"
    empty.write_text(dump_config(Config(), "json"))
    assert load_config(empty) == Config()


def test_yaml_flow_style_is_still_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, None)
    path.write_text("{services: [{vip: 10.0.0.1, proto: tcp, port: 80}]}\n")
    assert len(load_config(path).services) == 1


def test_json_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "services.json"
    path.write_text('{"flow_table_size": 5, "flow_table_size": 6}')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: invalid JSON: duplicate key 'flow_table_size'"
    path.write_text('{"services": [{"vip": "10.0.0.1", "proto": "tcp", "port": 0}]}')
    with pytest.raises(ConfigError, match=r"services\[0\] \(10.0.0.1:tcp:0\): port: "
                                          "0 is outside 1-65535"):
        load_config(path)
    path.write_text('{"services": [')         # neither JSON nor YAML
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path)


def test_dump_config_forms(example: Config) -> None:
    assert config_form("/etc/rplb/services.JSON") == "json"
    assert config_form("services.yaml") == config_form("services") == "yaml"
    with pytest.raises(ValueError):
        dump_config(example, "toml")


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["services", "strict", "timeouts", "x"]), json_values,
                       max_size=4),
       st.sampled_from([None, 0, 2]), st.sampled_from(["", " ", ",", "]", "}", "x"]))
def test_json_is_read_piecewise_as_json_reads_it(document, indent, garbage):
    """A services file's JSON is decoded a service at a time (so the
    control plane's other threads keep running during a large reload):
    it must give what one json.loads gives, and refuse what it refuses."""
    import json
    from rplb.config import _NOT_JSON, _load_json
    text = json.dumps(document, indent=indent)
    for raw in (text, text[:-1] + garbage + text[-1:], text + garbage):
        try:
            expected = json.loads(raw)
        except ValueError:
            expected = _NOT_JSON
        result = _load_json(raw.encode(), "f.json")
        if expected is _NOT_JSON:
            assert result is _NOT_JSON
        else:
            assert result == expected
