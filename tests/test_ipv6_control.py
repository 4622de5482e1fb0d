"""IPv6 services in the control plane (issue 19), without the fast path:
the services file's IPv6 syntax and rules (one address family per service,
canonical forms, what cannot be a VIP or a backend), service keys and
rplbctl's bracketed addresses, the spec rows and Maglev tables built for
IPv6 services, and every place that prints an address with a port.

The test at the end, test_ipv6_service_edits_through_the_control_socket, edits IPv6 services
through a running rplb-dpdk's control socket: they need the IPv6 fast path
(the engine on main before it refuses family 6 at publish) and skip,
saying so, where the engine refuses IPv6 services.
"""

from __future__ import annotations

import ipaddress
import json
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import maglev_reference as reference
from test_config import valid_configs      # IPv4 and IPv6 services
from rplb import ctl, maglev
from rplb.balancer import Balancer, endpoint_text, ident_text
from rplb.config import (Backend, Config, ConfigError, NotFoundError, Service, ServiceKey,
                         address_port, dump_config, load_config, parse_address, parse_config,
                         parse_service_key, split_address)

VIP6 = "fd00::100"
B6 = ("fd00:1::10", "fd00:1::11", "fd00:1::12")


def web6(backends=B6, weights=(1, 2, 3), **extra):
    return {"name": "web6", "vip": VIP6, "proto": "tcp", "port": 80,
            "backends": [{"ip": ip, "port": 8080, "weight": w}
                         for ip, w in zip(backends, weights)], **extra}


def mixed(**extra) -> dict:
    """An IPv4 and an IPv6 service in one file."""
    return {"services": [
        {"name": "web", "vip": "10.0.0.100", "proto": "tcp", "port": 80,
         "backends": [{"ip": "192.168.1.10", "port": 8080}]},
        web6(), *extra.get("more", [])]}


def error_of(data) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "services.yaml")
    err = caught.value
    assert "\n" not in str(err)
    return err


# ---- the services file ----------------------------------------------------------

def test_ipv6_services_parse_in_canonical_form_and_round_trip(tmp_path: Path):
    data = mixed()
    data["services"][1]["vip"] = "FD00:0:0::0100"
    data["services"][1]["backends"][0]["ip"] = "fd00:1:0:0:0:0:0:10"
    config = parse_config(data)
    svc = config.service("web6")
    assert svc.vip == IPv6Address(VIP6) and svc.family == 6
    assert config.service("web").family == 4
    assert [str(b.ip) for b in svc.backends] == list(B6)
    assert svc.to_dict()["vip"] == VIP6                      # written canonical
    assert svc.to_dict()["backends"][0]["ip"] == B6[0]
    for form in ("yaml", "json"):
        path = tmp_path / f"services.{form}"
        path.write_text(dump_config(config, form))
        assert load_config(path) == config
        assert "FD00" not in path.read_text() and "0100" not in path.read_text()


def test_labels_and_keys_bracket_ipv6_and_keep_ipv4():
    config = parse_config(mixed())
    v4, v6 = config.services
    assert str(v4.key) == "10.0.0.100:tcp:80" and v4.backends[0].label == "192.168.1.10:8080"
    assert str(v6.key) == "[fd00::100]:tcp:80"
    assert [b.label for b in v6.backends] == [f"[{ip}]:8080" for ip in B6]
    assert str(v6.backends[0]) == "[fd00:1::10]:8080"
    assert address_port(IPv6Address("FD00::1"), "udp:53") == "[fd00::1]:udp:53"
    assert address_port(IPv4Address("10.0.0.1"), 53) == "10.0.0.1:53"
    unnamed = parse_config({"services": [{k: v for k, v in web6().items() if k != "name"}]})
    assert unnamed.services[0].label == "[fd00::100]:tcp:80"


@pytest.mark.parametrize("vip, backend, field, both", [
    ("fd00::100", "192.168.1.10", "services[0].backends[1].ip",
     ("192.168.1.10 is an IPv4 address", "vip fd00::100 is IPv6")),
    ("10.0.0.100", "fd00:1::10", "services[0].backends[1].ip",
     ("fd00:1::10 is an IPv6 address", "vip 10.0.0.100 is IPv4")),
])
def test_mixing_families_in_a_service_names_the_field_and_both_addresses(vip, backend, field,
                                                                         both):
    same = "fd00:1::20" if ":" in vip else "192.168.1.20"
    err = error_of({"services": [{"name": "s", "vip": vip, "proto": "tcp", "port": 80,
                                  "backends": [{"ip": same, "port": 1},
                                               {"ip": backend, "port": 1}]}]})
    assert err.field == field
    assert err.where == f"services[0] (s): backends[1].ip"
    for part in both:
        assert part in err.problem
    assert "NAT64/NAT46" in err.problem


@pytest.mark.parametrize("role, address, problem", [
    ("vip", "::", "unspecified"),
    ("vip", "::1", "loopback"),
    ("vip", "ff02::1", "multicast"),
    ("vip", "ff0e::1:3", "multicast"),
    ("vip", "fe80::1", "link-local address: a VIP must be reachable beyond one link"),
    ("vip", "febf::1", "link-local"),
    ("vip", "::ffff:10.0.0.1", "IPv4-mapped IPv6 address: write the IPv4 address 10.0.0.1"),
    ("vip", "::ffff:10.0.0.1", "NAT64/NAT46"),
    ("vip", "fd00::1%eth0", "zone index"),
    ("vip", "[fd00::1]", "without brackets"),
    ("vip", "fd00:::1", "'fd00:::1' is not a valid IPv6 address"),
    ("vip", "fd00::1/128", "not a valid IPv6 address"),
    ("vip", "10.0.0.1:80", "'10.0.0.1:80' is not a valid IPv4 address: the port goes in its own"),
    ("backend", "::", "unspecified"),
    ("backend", "::1", "loopback"),
    ("backend", "ff02::2", "multicast"),
    ("backend", "::ffff:192.168.1.1", "IPv4-mapped"),
    ("backend", "fe80::1%2", "zone index"),
])
def test_addresses_that_cannot_be_a_vip_or_backend_are_refused(role, address, problem):
    data = {"services": [web6()]}
    if role == "vip":
        data["services"][0]["vip"] = address
        field = "services[0].vip"
    else:
        data["services"][0]["backends"][1]["ip"] = address
        field = "services[0].backends[1].ip"
    err = error_of(data)
    assert err.field == field and problem in err.problem, str(err)


def test_a_link_local_backend_is_allowed():
    """A backend on rplb's own backend link may have a link-local address
    (a VIP may not: clients reach it through routers)."""
    config = parse_config({"services": [web6(backends=("fe80::10", "fe80::11"))]})
    assert str(config.services[0].backends[0].ip) == "fe80::10"


def test_duplicates_are_found_whatever_the_spelling_and_not_across_families():
    err = error_of({"services": [web6(), {**web6(), "name": "other", "vip": "FD00:0::100"}]})
    assert err.field == "services[1]" and "duplicate service, already defined at " \
        "services[0] (web6)" in err.problem
    err = error_of({"services": [web6(backends=("fd00:1::10", "FD00:1:0::10"))]})
    assert err.field == "services[0].backends[1]"
    assert "duplicate backend [fd00:1::10]:8080, already at backends[0]" in err.problem
    # ::a00:64 is 10.0.0.100's number, but another family: another service.
    config = parse_config({"services": [
        {"vip": "10.0.0.100", "proto": "tcp", "port": 80,
         "backends": [{"ip": "10.0.0.1", "port": 80}]},
        {"vip": "::a00:64", "proto": "tcp", "port": 80,
         "backends": [{"ip": "::a00:1", "port": 80}]}]})
    assert len(config.services) == 2
    assert config.service("10.0.0.100:tcp:80").family == 4
    assert config.service("[::a00:64]:tcp:80").family == 6


def test_an_ipv6_service_takes_no_health_check_yet():
    data = mixed()
    data["health_checks"] = {"source": "192.168.1.2/24"}
    data["services"][0]["health"] = {"type": "tcp"}
    parse_config(data)                                  # IPv4: fine
    data["services"][1]["health"] = {"type": "tcp"}
    err = error_of(data)
    assert err.field == "services[1].health"
    assert "IPv6 health checks are not supported yet" in err.problem
    data["services"][1].pop("health")
    data["health_checks"] = {"source": "fd00:1::2/64"}
    err = error_of(data)
    assert err.field == "health_checks.source"
    assert "IPv6 health checks are not supported yet" in err.problem


def test_ipv6_addresses_are_not_mistaken_for_the_health_source():
    """The source check compares addresses of one family: ::c0a8:102 has
    the IPv4 source's number, and is another address."""
    data = {"health_checks": {"source": "192.168.1.2/24"},
            "services": [web6(backends=("::c0a8:102",), weights=(1,))]}
    data["services"][0]["vip"] = "::c0a8:102"
    config = parse_config(data)
    assert str(config.services[0].vip) == "::c0a8:102"


def test_edits_of_an_ipv6_service():
    config = parse_config(mixed())
    edited = config.with_backend("[fd00::100]:tcp:80", Backend("FD00:1::13", 8080, 4))
    assert edited.service("web6").backends[-1] == Backend(IPv6Address("fd00:1::13"), 8080, 4)
    edited = edited.with_weight("web6", "[fd00:1::13]", 8080, 0)
    assert edited.service("web6").backend("fd00:1:0::13", 8080).weight == 0
    edited = edited.without_backend("[FD00::100]:tcp:80", "fd00:1::13", 8080)
    assert edited == config
    with pytest.raises(ConfigError) as caught:
        config.with_backend("web6", Backend("192.168.1.99", 8080, 1))
    assert "192.168.1.99 is an IPv4 address but the service's vip fd00::100 is IPv6" \
        in caught.value.problem
    with pytest.raises(ConfigError, match=r"no backend \[fd00:1::99\]:8080"):
        config.with_weight("web6", "FD00:1::99", 8080, 3)
    with pytest.raises(NotFoundError, match=r"has no backend \[fd00:1::99\]:1"):
        config.service("web6").backend("fd00:1::99", 1)
    added = config.with_service(Service(IPv6Address("fd00::200"), "udp", 53,
                                        (Backend(IPv6Address("fd00:2::1"), 5353),)))
    assert added.service("[fd00::200]:udp:53").backends[0].label == "[fd00:2::1]:5353"


# ---- service keys and rplbctl's addresses -----------------------------------------

def test_service_keys_take_bracketed_ipv6():
    assert parse_service_key("[FD00:0::100]:TCP:80") == ServiceKey(IPv6Address(VIP6), "tcp", 80)
    assert parse_service_key("10.0.0.1:udp:53") == ServiceKey(IPv4Address("10.0.0.1"), "udp", 53)
    for text, problem in [
            ("fd00::100:tcp:80", "an IPv6 address with a port takes brackets: "
                                 "[fd00::100]:tcp:80"),
            ("FD00:0::100:tcp:80", "takes brackets: [fd00::100]:tcp:80"),
            ("[10.0.0.1]:tcp:80", "brackets are for IPv6 addresses only"),
            ("[fd00::100:tcp:80", "no ']' closes the IPv6 address"),
            ("[fd00::100]tcp:80", "expected ':' after ']'"),
            ("[fd00::100]:tcp", "expected vip:proto:port"),
            ("[fe80::1]:tcp:80", "link-local"),
            ("[ff02::1]:tcp:80", "multicast")]:
        with pytest.raises(ConfigError) as caught:
            parse_service_key(text)
        assert problem in str(caught.value), (text, str(caught.value))
    config = parse_config(mixed())
    with pytest.raises(NotFoundError, match=r"takes brackets: \[fd00::100\]:tcp:80"):
        config.service("fd00::100:tcp:80")


def test_parse_address():
    assert parse_address("[FD00::1]") == IPv6Address("fd00::1")
    assert parse_address("10.0.0.1") == IPv4Address("10.0.0.1")
    for bad in ("[10.0.0.1]", "fd00:::1", "x"):
        with pytest.raises(ConfigError):
            parse_address(bad)


def request_of(*argv) -> dict:
    return ctl.build_request(ctl.build_parser().parse_args(list(argv)))


def test_rplbctl_takes_bracketed_ipv6_in_every_command():
    assert request_of("service", "add", "[fd00::100]:tcp:80", "--name", "web6",
                      "--backend", "[fd00:1::10]:8080:5", "--backend", "[fd00:1::11]:8080") == {
        "cmd": "service.add", "service": {
            "name": "web6", "vip": "fd00::100", "proto": "tcp", "port": 80,
            "backends": [{"ip": "fd00:1::10", "port": 8080, "weight": 5},
                         {"ip": "fd00:1::11", "port": 8080}]}}
    assert request_of("service", "del", "[fd00::100]:tcp:80") == {
        "cmd": "service.del", "service": "[fd00::100]:tcp:80"}
    for action, extra, fields in [("add", ["--weight", "7"], {"weight": 7}),
                                  ("del", [], {}), ("set-weight", ["0"], {"weight": 0}),
                                  ("disable", [], {}), ("enable", [], {})]:
        assert request_of("backend", action, "[fd00::100]:tcp:80", "[fd00:1::10]:8080",
                          *extra) == {"cmd": f"backend.{action}",
                                      "service": "[fd00::100]:tcp:80",
                                      "ip": "fd00:1::10", "port": 8080, **fields}
    # IPv4 as before.
    assert request_of("backend", "add", "web", "192.168.1.13:8080") == {
        "cmd": "backend.add", "service": "web", "ip": "192.168.1.13", "port": 8080,
        "weight": 1}


@pytest.mark.parametrize("argv, message", [
    (["service", "add", "fd00::100:tcp:80"],
     "service 'fd00::100:tcp:80': an IPv6 address with a port takes brackets: "
     "[fd00::100]:tcp:80"),
    (["service", "add", "[fd00::100]:tcp:80", "--backend", "fd00:1::10:8080:5"],
     "backend 'fd00:1::10:8080:5': an IPv6 address with a port takes brackets: "
     "[fd00:1::10]:8080:5"),
    (["backend", "add", "web6", "fd00:1::10:8080"],
     "backend 'fd00:1::10:8080': an IPv6 address with a port takes brackets: [fd00:1::10]:8080"),
    (["backend", "del", "web6", "[fd00:1::10]"], "expected IP:PORT"),
    (["backend", "del", "web6", "[fd00:1::10]:8080:3"], "expected IP:PORT"),
    (["backend", "del", "web6", "[192.168.1.1]:8080"], "brackets are for IPv6 addresses only"),
])
def test_rplbctl_refuses_unbracketed_ipv6_showing_the_bracketed_form(argv, message, capsys):
    assert ctl.main(["--socket", "/nonexistent/rplb.sock", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rplbctl: error: ") and message in err, err
    assert err.count("\n") == 1


ipv6_addresses = st.ip_addresses(v=6).filter(lambda a: a.scope_id is None)


@settings(max_examples=200, deadline=None)
@given(ipv6_addresses, st.integers(0, 65535), st.integers(0, 65535))
def test_rplbctl_backend_addresses_property(address, port, weight):
    """Any IPv6 address in brackets reaches rplb as its address; without
    brackets the error shows a bracketed form naming the same address."""
    spellings = {str(address), address.exploded, str(address).upper()}
    for text in spellings:
        fields = ctl._backend_address(f"[{text}]:{port}:{weight}", allow_weight=True)
        assert IPv6Address(fields["ip"]) == address
        assert (fields["port"], fields["weight"]) == (port, weight)
        with pytest.raises(ctl.UsageError) as caught:
            ctl._backend_address(f"{text}:{port}", allow_weight=False)
        message = str(caught.value)
        assert "takes brackets" in message
        if "[" in message.partition("brackets: ")[2]:
            shown = message.partition("brackets: ")[2].split("]")[0].lstrip("[")
            # The suggestion splits the text where a port can be.
            assert _is_v6(shown)


def _is_v6(text: str) -> bool:
    try:
        IPv6Address(text)
    except ValueError:
        return False
    return True


@settings(max_examples=200, deadline=None)
@given(ipv6_addresses.filter(lambda a: not (a.is_multicast or a.is_unspecified or a.is_loopback
                                            or a.is_link_local or a.ipv4_mapped)),
       st.sampled_from(["tcp", "udp"]), st.integers(1, 65535))
def test_service_key_text_round_trips(vip, proto, port):
    key = ServiceKey(vip, proto, port)
    assert parse_service_key(str(key)) == key
    assert str(key) == f"[{vip.compressed}]:{proto}:{port}"
    assert split_address(str(key), (2,), "", "") == (vip.compressed, [proto, str(port)])


# ---- tables and Maglev ---------------------------------------------------------------

class FakeMaglevTable:
    """rplb.dataplane.MaglevTable without the DPDK heap: keeps what it was given."""

    def __init__(self, owners, ids):
        self.owners, self.ids = np.asarray(owners), np.asarray(ids)

    def close(self):
        pass


@pytest.fixture
def tables(monkeypatch):
    from rplb import dataplane
    from rplb.tables import TableState
    monkeypatch.setattr(dataplane, "MaglevTable", FakeMaglevTable)
    return TableState()


def test_table_rows_of_ipv4_and_ipv6_services(tables):
    config = parse_config(mixed())
    tables.plan(config)
    services, backends, maglev_tables = tables.arrays()
    by_family = {int(row["family"]): row for row in services}
    v4, v6 = by_family[4], by_family[6]
    assert v4["vip"] == int.from_bytes(IPv4Address("10.0.0.100").packed, "little")
    assert not v4["vip6"].any()
    assert v6["vip"] == 0
    assert bytes(v6["vip6"]) == IPv6Address(VIP6).packed
    assert v6["port"] == int.from_bytes((80).to_bytes(2, "big"), "little")
    rows6 = backends[backends["service_id"] == v6["service_id"]]
    assert [bytes(r["ip6"]) for r in rows6] == [IPv6Address(ip).packed for ip in B6]
    assert (rows6["ip"] == 0).all() and rows6["weight"].tolist() == [1, 2, 3]
    rows4 = backends[backends["service_id"] == v4["service_id"]]
    assert rows4["ip"].tolist() == [int.from_bytes(IPv4Address("192.168.1.10").packed,
                                                   "little")]
    assert not rows4["ip6"].any()
    # The IPv6 service's Maglev table: the reference's, shares by weight.
    row_of_v6 = list(services["service_id"]).index(v6["service_id"])
    table = maglev_tables[row_of_v6]
    size = config.maglev_size(config.service("web6"))
    want = reference.build_table([int(IPv6Address(ip)) for ip in B6], [8080] * 3,
                                 [1, 2, 3], size, family=6)
    assert table.owners.tolist() == want
    shares = np.bincount(table.owners, minlength=3) / size
    assert np.allclose(shares, [1 / 6, 2 / 6, 3 / 6], atol=0.01)


def test_an_ipv6_backend_drained_and_removed_keeps_the_others_rows(tables):
    config = parse_config(mixed())
    tables.commit(tables.plan(config))
    drained = config.with_weight("web6", B6[0], 8080, 0).without_backend("web6", B6[2], 8080)
    plan = tables.plan(drained)
    _, backends, _ = tables.arrays()
    v6_rows = backends[np.array([bytes(r["ip6"]) != bytes(16) for r in backends])]
    assert sorted(bytes(r["ip6"]) for r in v6_rows) == sorted(
        IPv6Address(ip).packed for ip in B6[:2])
    tables.rollback(plan)
    _, backends, _ = tables.arrays()
    assert len(backends) == 4


def test_ipv4_maglev_hashes_are_unchanged():
    """The IPv4 hashes of before IPv6 (golden values: existing tables do
    not move)."""
    ips = [int(IPv4Address("192.168.1.10")), int(IPv4Address("10.0.0.1"))]
    h1, h2 = maglev.backend_hashes(ips, [8080, 80])
    assert [int(h) for h in h1] == [reference.hashes(ip, p)[0] for ip, p in zip(ips, [8080, 80])]
    assert [int(h) for h in h2] == [reference.hashes(ip, p)[1] for ip, p in zip(ips, [8080, 80])]
    assert maglev.backend_hashes(ips, [8080, 80], family=4)[0].tolist() == h1.tolist()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 65535),
                          st.integers(0, 20)),
                min_size=1, max_size=8, unique_by=lambda b: b[:2]),
       st.sampled_from([7, 13, 101, 1009]))
def test_ipv6_tables_match_the_reference(backends, size):
    if size < len(backends):
        size = 1009
    ips, ports, weights = (list(column) for column in zip(*backends))
    table = maglev.build_table(ips, ports, weights, size, family=6)
    assert table.tolist() == reference.build_table(ips, ports, weights, size, family=6)
    h1, h2 = maglev.backend_hashes(ips, ports, family=6)
    assert [(int(a), int(b)) for a, b in zip(h1, h2)] == [
        reference.hashes6(ip, port) for ip, port in zip(ips, ports)]
    # Whatever the order the backends come in.
    order = list(reversed(range(len(ips))))
    again = maglev.build_table([ips[i] for i in order], [ports[i] for i in order],
                               [weights[i] for i in order], size, family=6)
    assert [order[i] if i >= 0 else -1 for i in again.tolist()] == table.tolist()


def test_ipv6_maglev_input_errors():
    with pytest.raises(ValueError, match=r"duplicate backend \[fd00::1\]:80"):
        maglev.build_table([IPv6Address("fd00::1"), int(IPv6Address("fd00::1"))], [80, 80],
                           [1, 1], 7, family=6)
    with pytest.raises(ValueError, match="out of range"):
        maglev.build_table([2**128], [80], [1], 7, family=6)
    with pytest.raises(ValueError, match="out of range"):
        maglev.build_table([IPv4Address("10.0.0.1")], [80], [1], 7, family=6)
    with pytest.raises(ValueError, match="family must be 4 or 6"):
        maglev.build_table([1], [80], [1], 7, family=5)
    with pytest.raises(TypeError):
        maglev.build_table(["fd00::1"], [80], [1], 7, family=6)
    # The same addresses' hashes differ by port and by address.
    a = int(IPv6Address("fd00::1"))
    h1, _ = maglev.backend_hashes([a, a, a + 1], [80, 81, 80], family=6)
    assert len(set(h1.tolist())) == 3


# ---- what operators read --------------------------------------------------------------

def test_ident_and_endpoint_texts():
    ip = int(IPv6Address("fd00:1::10"))
    assert ident_text((ip, 8080), 6) == "[fd00:1::10]:8080"
    assert ident_text((int(IPv4Address("10.1.2.3")), 80)) == "10.1.2.3:80"
    assert endpoint_text("10.1.2.3", 80) == "10.1.2.3:80"
    assert endpoint_text("FD00::1", 80) == "[fd00::1]:80"
    assert endpoint_text(np.frombuffer(IPv6Address("fd00::1").packed, np.uint8), 80, 6) \
        == "[fd00::1]:80"
    assert endpoint_text(IPv6Address("fd00::1"), 80, 6) == "[fd00::1]:80"


def flow(family, client, vip, backend, service_id, **ip6):
    return {"client": client, "vip": vip, "backend": backend, "proto": "tcp",
            "service_id": service_id, "backend_id": 1, "state": "established",
            "idle_ms": 1500, "lcore": 1, "family": family, **ip6}


def test_flow_samples_bracket_ipv6_from_their_ip6_fields():
    """rplbctl flows' lines: an IPv6 flow's addresses come from the
    sample's ip6 fields (its IPv4 ones are zero), an IPv4 flow's are as
    before; a flow of a service no longer configured is named by its VIP."""
    def packed(text):
        return np.frombuffer(IPv6Address(text).packed, np.uint8)
    config = parse_config(mixed())
    web, web6_service = config.services
    placed = {web.key: SimpleNamespace(service_id=0, service=web),
              web6_service.key: SimpleNamespace(service_id=1, service=web6_service)}
    flows = [
        flow(4, ("10.9.0.1", 40000), ("10.0.0.100", 80), ("192.168.1.10", 8080), 0),
        flow(6, ("0.0.0.0", 40001), ("0.0.0.0", 80), ("0.0.0.0", 8080), 1,
             client_ip6=packed("fd00:9::1"), vip6=packed(VIP6), backend_ip6=packed(B6[1])),
        flow(6, ("0.0.0.0", 40002), ("0.0.0.0", 443), ("0.0.0.0", 8443), 7,
             client_ip6=packed("fd00:9::2"), vip6=packed("fd00::999"),
             backend_ip6=packed("fd00:1::99")),
    ]
    fake = SimpleNamespace(_lb=SimpleNamespace(flow_sample=lambda count: flows),
                           _view=(config, placed))
    sample = Balancer.flow_sample(fake, 16)
    assert [(s["client"], s["service"], s["backend"]) for s in sample] == [
        ("10.9.0.1:40000", "web", "192.168.1.10:8080"),
        ("[fd00:9::1]:40001", "web6", "[fd00:1::11]:8080"),
        ("[fd00:9::2]:40002", "[fd00::999]:tcp:443", "[fd00:1::99]:8443")]
    text = ctl._format_flows({"flows": 3, "flows_created": 3, "flows_expired": 0,
                              "flows_moved": 0, "flow_table_full": 0, "flow_table_size": 64,
                              "services": [], "sample": sample})
    assert "  [fd00:9::1]:40001 -> web6 -> [fd00:1::11]:8080  established  1.5 s  lcore 1" \
        in text.splitlines()
    # A sample that gives IPv6 addresses as text (no ip6 fields) reads the same.
    flows[1] = flow(6, ("fd00:9::1", 40001), (VIP6, 80), (B6[1], 8080), 1)
    assert Balancer.flow_sample(fake, 16)[1]["backend"] == "[fd00:1::11]:8080"


def stats_entry(config: Config) -> list:
    """service_stats()' shape, from a configuration (counters made up)."""
    return [{"service": svc.label, "key": str(svc.key), "packets": 5, "bytes": 500,
             "new_flows": 2, "active_flows": 1, "health_check": None, "failing_open": False,
             "backends": [{"backend": b.label, "weight": b.weight, "packets": 1, "bytes": 100,
                           "new_flows": 1, "active_flows": 0, "state": "up", "up": 1,
                           "health": None, "reason": None, "disabled": False, "since": None}
                          for b in svc.backends]}
            for svc in config.services]


def test_stats_prometheus_and_telemetry_name_ipv6_with_brackets():
    from rplb import prometheus, stats, telemetry
    config = parse_config(mixed())
    snapshot = {"uptime_s": 1.0, "engine": "lb",
                "ports": [{"role": "frontend", "port_id": 0, "name": "a"},
                          {"role": "backend", "port_id": 1, "name": "b"}],
                "port": [{"rx_packets": 1, "tx_packets": 1, "tx_dropped": 0}] * 2,
                "drops": {"malformed": 0}, "events": {"to_backend": 1},
                "services": stats_entry(config)}
    text = stats.format_rplb(snapshot)
    assert "  service web [10.0.0.100:tcp:80]: packets=5" in text
    assert "  service web6 [[fd00::100]:tcp:80]: packets=5" in text
    assert "    backend [fd00:1::12]:8080 weight=3: packets=1" in text
    exposition = bytes(prometheus.render_text(snapshot)).decode()
    assert 'rplb_service_packets_total{service="web6",key="[fd00::100]:tcp:80"} 5' in exposition
    assert ('rplb_backend_packets_total{service="web6",key="[fd00::100]:tcp:80",'
            'backend="[fd00:1::10]:8080"} 1') in exposition
    assert 'key="10.0.0.100:tcp:80",backend="192.168.1.10:8080"' in exposition
    entries = telemetry.services_entries(snapshot)
    assert ("web6", "key", "[fd00::100]:tcp:80") in entries
    assert ("web6", "backend/2/address", "[fd00:1::12]:8080") in entries
    unnamed = parse_config({"services": [{k: v for k, v in web6().items() if k != "name"}]})
    groups = {group for group, _, _ in
              telemetry.services_entries({"services": stats_entry(unnamed)})}
    assert groups == {telemetry.telemetry_name("[fd00::100]:tcp:80")}


def test_service_list_and_status_print_bracketed_ipv6():
    config = parse_config(mixed())
    reply = {"services": []}
    for svc, stats in zip(config.services, stats_entry(config)):
        entry = {"key": str(svc.key), **svc.to_dict(),
                 "counters": {"packets": 5, "bytes": 500, "new_flows": 2, "active_flows": 1},
                 "failing_open": False}
        for backend in entry["backends"]:
            backend["counters"] = {"packets": 1, "bytes": 100, "new_flows": 1,
                                   "active_flows": 0}
        reply["services"].append(entry)
    lines = ctl._format_services(reply, now=0).splitlines()
    assert lines[1].split()[:3] == ["TCP", "10.0.0.100:80", "web"]
    assert lines[2].split()[:3] == ["->", "192.168.1.10:8080", "1"]
    assert lines[3].split()[:3] == ["TCP", "[fd00::100]:80", "web6"]
    assert [line.split()[1] for line in lines[4:7]] == [f"[{ip}]:8080" for ip in B6]
    status = ctl._format_status({
        "pid": 1, "uptime_s": 1.0, "engine": "lb", "lcores": [1], "ports": [],
        "services": 2, "backends": 4, "flows": 0, "control_socket": "/s",
        "backends_down": [{"service": "web6", "backend": "[fd00:1::10]:8080",
                           "health": None, "reason": None, "disabled": True, "since": None}]})
    assert "  web6: [fd00:1::10]:8080 down (disabled)" in status.splitlines()


def test_check_config_lists_ipv6_services():
    from rplb import check_config
    config = parse_config(mixed())
    text = "\n".join(check_config.summary("services.yaml", config, None, 1024))
    assert "[fd00::100]:tcp:80" in text and "10.0.0.100:tcp:80" in text


# ---- through a running rplb-dpdk (needs the IPv6 fast path) ---------------------------

def ipv6_daemon(tmp_path: Path, monkeypatch):
    """rplb-dpdk (pcap ports, control socket) serving the mixed file; skips
    where the engine refuses IPv6 services (before the IPv6 fast path)."""
    import test_control
    data = {"flow_table_size": 4096, "maglev_table_size": 65537, **mixed()}
    monkeypatch.setattr(test_control, "config_dict", lambda *args: data)
    try:
        return test_control.Daemon(tmp_path)
    except AssertionError as err:
        if "family 6" in str(err):
            pytest.skip("needs the IPv6 fast path: this engine refuses IPv6 services")
        raise


def test_ipv6_service_edits_through_the_control_socket(tmp_path: Path, monkeypatch):
    """Needs the IPv6 fast path (skips, saying so, without it)."""
    d = ipv6_daemon(tmp_path, monkeypatch)
    try:
        listed = d.json("service", "list")["services"]
        assert [s["key"] for s in listed] == ["10.0.0.100:tcp:80", "[fd00::100]:tcp:80"]
        lines = d.ok("service", "list").stdout.splitlines()
        assert lines[3].split()[:3] == ["TCP", "[fd00::100]:80", "web6"]
        proc = d.ok("service", "add", "[FD00::200]:udp:53", "--name", "dns6",
                    "--backend", "[fd00:2::1]:5353:2", "--backend", "[fd00:2::2]:5353")
        assert "added service dns6 ([fd00::200]:udp:53) with 2 backends" in proc.stdout
        assert d.services()[-1] == {
            "name": "dns6", "vip": "fd00::200", "proto": "udp", "port": 53,
            "backends": [{"ip": "fd00:2::1", "port": 5353, "weight": 2},
                         {"ip": "fd00:2::2", "port": 5353, "weight": 1}]}
        proc = d.ok("backend", "add", "[fd00::100]:tcp:80", "[FD00:1::13]:8080", "--weight", "4")
        assert "added backend [fd00:1::13]:8080 (weight 4) to web6" in proc.stdout
        proc = d.ok("backend", "set-weight", "web6", "[fd00:1::13]:8080", "0")
        assert "web6: backend [fd00:1::13]:8080 weight 4 -> 0 (draining" in proc.stdout
        proc = d.ok("backend", "disable", "web6", "[fd00:1::10]:8080")
        assert "web6: backend [fd00:1::10]:8080 disabled" in proc.stdout
        status = d.ok("status").stdout
        assert "  web6: [fd00:1::10]:8080 down (disabled)" in status
        d.ok("backend", "enable", "web6", "[fd00:1::10]:8080")
        proc = d.ok("backend", "del", "web6", "[fd00:1::13]:8080")
        assert "removed backend [fd00:1::13]:8080 from web6" in proc.stdout
        assert "removed service dns6" in d.ok("service", "del", "[fd00::200]:udp:53").stdout
        # Refusals, each one line, nothing changed.
        before = d.services()
        assert "IPv4 address but the service's vip fd00::100 is IPv6" in d.fails(
            "backend", "add", "web6", "192.168.1.50:8080")
        assert "takes brackets: [fd00:1::10]:8080" in d.fails(
            "backend", "del", "web6", "fd00:1::10:8080")
        assert "no backend [fd00:1::99]:8080" in d.fails(
            "backend", "del", "web6", "[fd00:1::99]:8080")
        assert "link-local" in d.fails("service", "add", "[fe80::1]:tcp:80")
        assert d.services() == before
        stats = d.json("stats")
        keys = [s["key"] for s in stats["services"]]
        assert keys == ["10.0.0.100:tcp:80", "[fd00::100]:tcp:80"]
        assert [b["backend"] for b in stats["services"][1]["backends"]] == \
            [f"[{ip}]:8080" for ip in B6]
        saved = tmp_path / "saved.yaml"
        d.ok("save", str(saved))
        assert load_config(saved) == load_config(tmp_path / "services.yaml")
    finally:
        d.stop()


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_table_rows_keep_each_family_in_its_own_fields(data):
    """Whatever the mix of IPv4 and IPv6 services: an IPv4 row has its
    address in vip/ip and zero vip6/ip6, an IPv6 row the reverse, and each
    backend row is in its service's family."""
    from rplb import dataplane
    from rplb.tables import TableState
    config = data.draw(valid_configs())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dataplane, "MaglevTable", FakeMaglevTable)
        tables = TableState()
        plan = tables.plan(config)
    services, backends, _ = tables.arrays()
    by_id = {plan.placed[s.key].service_id: s for s in config.services}
    assert sorted(services["service_id"].tolist()) == sorted(by_id)
    for row in services:
        svc = by_id[int(row["service_id"])]
        assert row["family"] == svc.vip.version
        if svc.vip.version == 6:
            assert row["vip"] == 0 and bytes(row["vip6"]) == svc.vip.packed
        else:
            assert not row["vip6"].any()
            assert row["vip"] == int.from_bytes(svc.vip.packed, "little")
    for row in backends:
        svc = by_id[int(row["service_id"])]
        if svc.vip.version == 6:
            assert row["ip"] == 0
            assert bytes(row["ip6"]) in {b.ip.packed for b in svc.backends}
        else:
            assert not row["ip6"].any()
            assert row["ip"] in {int.from_bytes(b.ip.packed, "little") for b in svc.backends}
    assert len(backends) == sum(len(s.backends) for s in config.services)
