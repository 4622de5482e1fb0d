"""Health checks in the services file and what a backend's state publishes,
without DPDK: every bad `health` or `health_checks` field is refused with
an error that names it (the run-time side, where nothing may change, is in
test_health.py), and rplb.tables.effective turns down and disabled
backends into the weights and rows the fast path gets."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
import yaml

from rplb.check_config import mbuf_need, summary
from rplb.config import (Backend, ConfigError, Health, HealthChecks, Service, dump_config,
                         parse_config)
from rplb.tables import Availability, effective

NET = "10.70.1"


def data(health=None, health_checks=None, **service) -> dict:
    svc = {"name": "web", "vip": "10.0.0.100", "proto": "tcp", "port": 80,
           "backends": [{"ip": f"{NET}.10", "port": 8080}, {"ip": f"{NET}.11", "port": 8080}],
           **service}
    if health is not None:
        svc["health"] = health
    return {"health_checks": health_checks or {"source": f"{NET}.2/24"}, "services": [svc]}


def test_a_full_check_round_trips():
    health = {"type": "http", "port": 8081, "path": "/healthz?full=1", "expect": [200, 204],
              "interval": 0.5, "timeout": 0.25, "rise": 3, "fall": 1, "on_down": "reset",
              "on_all_down": "drop"}
    config = parse_config(data(health, {"source": f"{NET}.2/24", "interface": "rplb7",
                                        "kernel_rate": 5000}))
    assert config.health_checks == HealthChecks(__import__("ipaddress").IPv4Interface(
        f"{NET}.2/24"), "rplb7", 5000)
    assert config.services[0].health == Health("http", 8081, "/healthz?full=1", (200, 204),
                                                None, None, 0.5, 0.25, 3, 1, "reset", "drop")
    assert parse_config(yaml.safe_load(dump_config(config))) == config
    assert parse_config(config.to_dict()) == config


def test_defaults():
    config = parse_config(data({}))
    assert config.health_checks.interface == "rplb0"
    assert config.health_checks.kernel_rate == 20000
    assert config.services[0].health == Health()
    assert Health() == Health("tcp", None, "/", (200,), None, None, 2.0, 1.0, 2, 2, "keep", "open")
    # A short interval shortens the default timeout with it.
    assert parse_config(data({"interval": 0.5})).services[0].health.timeout == 0.5
    udp = parse_config(data({"type": "udp", "payload": "ping", "reply": "pong"}))
    assert udp.services[0].health.to_dict() == {
        "type": "udp", "payload": "ping", "reply": "pong", "interval": 2, "timeout": 1,
        "rise": 2, "fall": 2, "on_down": "keep", "on_all_down": "open"}


# (mutation of data(), ConfigError.field, part of the problem)
BAD = {
    "health_checks not a mapping": (
        lambda d: d.update(health_checks="10.0.0.2"), "health_checks", "must be a mapping"),
    "health_checks unknown key": (
        lambda d: d["health_checks"].update(sauce=1), "health_checks.sauce",
        "unknown key (allowed: source, interface, kernel_rate)"),
    "source missing": (
        lambda d: d.update(health_checks={"interface": "x"}), "health_checks.source",
        "missing required key"),
    "source without prefix": (
        lambda d: d["health_checks"].update(source=f"{NET}.2"), "health_checks.source",
        "has no prefix length"),
    "source prefix too long": (
        lambda d: d["health_checks"].update(source=f"{NET}.2/33"), "health_checks.source",
        "the prefix length must be 8-32"),
    "source prefix not a number": (
        lambda d: d["health_checks"].update(source=f"{NET}.2/x"), "health_checks.source",
        "the prefix length must be 8-32"),
    "source not an address": (
        lambda d: d["health_checks"].update(source="10.70.1/24"), "health_checks.source",
        "not a valid IPv4 address"),
    "source the network address": (
        lambda d: d["health_checks"].update(source=f"{NET}.0/24"), "health_checks.source",
        f"{NET}.0 is the network address of {NET}.0/24"),
    "source the broadcast address": (
        lambda d: d["health_checks"].update(source=f"{NET}.255/24"), "health_checks.source",
        "is the broadcast address"),
    "source multicast": (
        lambda d: d["health_checks"].update(source="224.0.0.5/24"), "health_checks.source",
        "multicast"),
    "source an integer": (
        lambda d: d["health_checks"].update(source=7), "health_checks.source",
        "must be ADDRESS/PREFIX"),
    "source is the VIP": (
        lambda d: d["health_checks"].update(source="10.0.0.100/24"), "services[0].vip",
        "10.0.0.100 is the appliance's own address (health_checks.source)"),
    "source is a backend": (
        lambda d: d["health_checks"].update(source=f"{NET}.11/24"),
        "services[0].backends[1].ip", "is the appliance's own address"),
    "interface too long": (
        lambda d: d["health_checks"].update(interface="a" * 16), "health_checks.interface",
        "must be 1-15 characters long"),
    "interface with a comma": (
        lambda d: d["health_checks"].update(interface="tap,iface=x"), "health_checks.interface",
        "may contain only letters, digits"),
    "interface with a slash": (
        lambda d: d["health_checks"].update(interface="a/b"), "health_checks.interface",
        "may contain only letters, digits"),
    "interface dot-dot": (
        lambda d: d["health_checks"].update(interface=".."), "health_checks.interface",
        "may contain only"),
    "interface a number": (
        lambda d: d["health_checks"].update(interface=5), "health_checks.interface",
        "must be a network interface name"),
    "kernel_rate too low": (
        lambda d: d["health_checks"].update(kernel_rate=10), "health_checks.kernel_rate",
        "10 is outside 100-1000000"),
    "kernel_rate not an integer": (
        lambda d: d["health_checks"].update(kernel_rate="fast"), "health_checks.kernel_rate",
        "must be an integer"),
    "health without health_checks": (
        lambda d: d.pop("health_checks"), "services[0].health",
        "add the top-level health_checks"),
    "health not a mapping": (
        lambda d: d["services"][0].update(health="http"), "services[0].health",
        "must be a mapping"),
    "health unknown key": (
        lambda d: d["services"][0]["health"].update(intervall=1), "services[0].health.intervall",
        "did you mean 'interval'?"),
    "type unknown": (
        lambda d: d["services"][0]["health"].update(type="icmp"), "services[0].health.type",
        "'icmp' is not a check type (expected tcp, http, udp)"),
    "port zero": (
        lambda d: d["services"][0]["health"].update(port=0), "services[0].health.port",
        "0 is outside 1-65535"),
    "path for tcp": (
        lambda d: d["services"][0]["health"].update(path="/x"), "services[0].health.path",
        "applies to type http checks only, not tcp"),
    "expect for tcp": (
        lambda d: d["services"][0]["health"].update(expect=[200]), "services[0].health.expect",
        "applies to type http checks only"),
    "payload for http": (
        lambda d: d["services"][0]["health"].update(type="http", payload="x"),
        "services[0].health.payload", "applies to type udp checks only, not http"),
    "path without slash": (
        lambda d: d["services"][0]["health"].update(type="http", path="healthz"),
        "services[0].health.path", "must start with '/'"),
    "path with a space": (
        lambda d: d["services"][0]["health"].update(type="http", path="/a b"),
        "services[0].health.path", "printable ASCII without spaces"),
    "path with a newline": (
        lambda d: d["services"][0]["health"].update(type="http", path="/a\r\nX: 1"),
        "services[0].health.path", "printable ASCII without spaces"),
    "path too long": (
        lambda d: d["services"][0]["health"].update(type="http", path="/" + "a" * 1024),
        "services[0].health.path", "more than 1024"),
    "expect empty": (
        lambda d: d["services"][0]["health"].update(type="http", expect=[]),
        "services[0].health.expect", "must list 1-32 HTTP status codes"),
    "expect not a status": (
        lambda d: d["services"][0]["health"].update(type="http", expect=[200, 99]),
        "services[0].health.expect[1]", "99 is outside 100-599"),
    "expect twice": (
        lambda d: d["services"][0]["health"].update(type="http", expect=[200, 200]),
        "services[0].health.expect[1]", "status 200 is listed twice"),
    "expect a string": (
        lambda d: d["services"][0]["health"].update(type="http", expect="200"),
        "services[0].health.expect", "must be a list"),
    "udp without payload": (
        lambda d: d["services"][0]["health"].update(type="udp", reply="x"),
        "services[0].health.payload", "a udp check needs a payload"),
    "udp without reply": (
        lambda d: d["services"][0]["health"].update(type="udp", payload="x"),
        "services[0].health.reply", "a udp check needs a reply"),
    "udp payload empty": (
        lambda d: d["services"][0]["health"].update(type="udp", payload="", reply="x"),
        "services[0].health.payload", "must be 1-1024 bytes long"),
    "udp reply not a string": (
        lambda d: d["services"][0]["health"].update(type="udp", payload="x", reply=5),
        "services[0].health.reply", "must be a string"),
    "interval zero": (
        lambda d: d["services"][0]["health"].update(interval=0), "services[0].health.interval",
        "0 s is outside 0.1-3600 s"),
    "interval a string": (
        lambda d: d["services"][0]["health"].update(interval="1s"),
        "services[0].health.interval", "must be a number of seconds"),
    "interval true": (
        lambda d: d["services"][0]["health"].update(interval=True),
        "services[0].health.interval", "must be a number of seconds"),
    "interval not a number": (
        lambda d: d["services"][0]["health"].update(interval=float("nan")),
        "services[0].health.interval", "is outside"),
    "timeout longer than interval": (
        lambda d: d["services"][0]["health"].update(interval=1, timeout=2),
        "services[0].health.timeout", "2 s is longer than the interval (1 s)"),
    "timeout too short": (
        lambda d: d["services"][0]["health"].update(timeout=0.001),
        "services[0].health.timeout", "is outside 0.05-3600 s"),
    "rise zero": (
        lambda d: d["services"][0]["health"].update(rise=0), "services[0].health.rise",
        "0 is outside 1-100"),
    "fall too big": (
        lambda d: d["services"][0]["health"].update(fall=101), "services[0].health.fall",
        "101 is outside 1-100"),
    "fall a float": (
        lambda d: d["services"][0]["health"].update(fall=2.5), "services[0].health.fall",
        "must be an integer"),
    "on_down unknown": (
        lambda d: d["services"][0]["health"].update(on_down="move"), "services[0].health.on_down",
        "'move' is not one of keep, reset"),
    "on_all_down unknown": (
        lambda d: d["services"][0]["health"].update(on_all_down="fail_open"),
        "services[0].health.on_all_down", "'fail_open' is not one of open, drop"),
    "checked backend off the network": (
        lambda d: d["services"][0]["backends"].append({"ip": "10.71.0.5", "port": 80}),
        "services[0].backends[2].ip",
        f"10.71.0.5 is not on the health checks' network {NET}.0/24"),
}


@pytest.mark.parametrize("mutate, field, problem", BAD.values(), ids=BAD.keys())
def test_every_bad_field_is_named(mutate, field, problem):
    document = data({})
    mutate(document)
    with pytest.raises(ConfigError) as caught:
        parse_config(document, source="services.yaml")
    err = caught.value
    assert err.field == field, str(err)
    assert problem in err.problem, str(err)
    assert str(err).startswith("services.yaml: ") and "\n" not in str(err)


SERVICE_FIELDS = {name: case for name, case in BAD.items() if case[1].startswith("services[0]")}


@pytest.mark.parametrize("mutate, field, problem", SERVICE_FIELDS.values(),
                         ids=SERVICE_FIELDS.keys())
def test_every_bad_service_field_is_refused_by_an_edit_too(mutate, field, problem):
    """rplbctl service add validates a service with the same rules, against
    the running configuration's health_checks."""
    document = data({})
    mutate(document)
    running = parse_config({"health_checks": document["health_checks"]}
                           if "health_checks" in document else {})
    with pytest.raises(ConfigError) as caught:
        running.with_service_data(document["services"][0])
    assert caught.value.field == field, str(caught.value)
    assert problem in caught.value.problem, str(caught.value)


def test_a_backend_added_off_the_network_of_a_checked_service_is_refused():
    config = parse_config(data({}))
    with pytest.raises(ConfigError) as caught:
        config.with_backend("web", Backend(IPv4Address("192.168.9.9"), 80))
    assert caught.value.field == "services[0].backends[2].ip"
    # Without a check it is fine: nothing probes it.
    unchecked = parse_config(data())
    assert len(unchecked.with_backend("web", Backend(IPv4Address("192.168.9.9"), 80))
               .services[0].backends) == 3


def test_check_config_names_the_checks_and_counts_the_kernel_queues():
    config = parse_config(data({"type": "http", "interval": 1}))
    lines = summary("services.yaml", config, 16383, 1024)
    assert any("http check every 1 s (rise 2, fall 2)" in line for line in lines), lines
    assert any(f"health checks: from {NET}.2/24 on interface rplb0 (made at start), "
               "2 backends checked" in line for line in lines), lines
    plain = data()
    del plain["health_checks"]
    without = mbuf_need(parse_config(plain), 16383, 1024)
    assert without.kernel_queues == 0
    assert mbuf_need(config, 16383, 1024).total == without.total + 2 * 256 + 64


# ---- what a state publishes ------------------------------------------------------

A, B, C = ((0x0A460100 + i, 8080) for i in (10, 11, 12))


def service(health=None, weights=(1, 1, 1)):
    return Service(IPv4Address("10.0.0.100"), "tcp", 80,
                   tuple(Backend(IPv4Address(ip), port, w)
                         for (ip, port), w in zip((A, B, C), weights)), "web", None, health)


def test_nothing_down_publishes_the_configuration():
    got = effective(service(Health()), Availability())
    assert got.weights == (1, 1, 1) and got.published == (True, True, True)
    assert not got.failing_open


def test_a_down_backend_leaves_maglev_and_keeps_its_flows_by_default():
    got = effective(service(Health()), Availability(down=frozenset({B})))
    assert got.weights == (1, 0, 1) and got.published == (True, True, True)


def test_on_down_reset_unpublishes_it_so_its_flows_move():
    got = effective(service(Health(on_down="reset")), Availability(down=frozenset({B})))
    assert got.weights == (1, 0, 1) and got.published == (True, False, True)


def test_down_means_nothing_without_a_check():
    got = effective(service(None), Availability(down=frozenset({B})))
    assert got.weights == (1, 1, 1)


def test_disabled_is_down_with_or_without_a_check():
    for health in (None, Health(), Health(on_down="reset")):
        got = effective(service(health), Availability(disabled=frozenset({C})))
        assert got.weights == (1, 1, 0)
        assert got.published == (True, True, health is None or health.on_down == "keep")


def test_all_down_fails_open_with_every_backend_that_may_serve():
    down = Availability(down=frozenset({A, B, C}))
    got = effective(service(Health(on_down="reset")), down)
    assert got.failing_open and got.weights == (1, 1, 1) and all(got.published)
    # Disabled and drained backends stay out of it.
    got = effective(service(Health(), weights=(1, 0, 1)),
                    Availability(down=frozenset({A, B, C}), disabled=frozenset({C})))
    assert got.failing_open and got.weights == (1, 0, 0)


def test_all_down_drop_serves_no_new_flow():
    got = effective(service(Health(on_all_down="drop", on_down="reset")),
                    Availability(down=frozenset({A, B, C})))
    assert not got.failing_open and got.weights == (0, 0, 0)
    assert got.published == (False, False, False)


def test_all_disabled_does_not_fail_open():
    got = effective(service(Health()), Availability(disabled=frozenset({A, B, C})))
    assert not got.failing_open and got.weights == (0, 0, 0)


def test_a_down_drained_backend_does_not_count_for_failing_open():
    got = effective(service(Health(), weights=(1, 1, 0)), Availability(down=frozenset({A, B})))
    assert got.failing_open and got.weights == (1, 1, 0)
    got = effective(service(Health(), weights=(1, 1, 0)), Availability(down=frozenset({A, C})))
    assert not got.failing_open and got.weights == (0, 1, 0)
