"""What a backend's state does to the fast path, packet by packet (net_tap
ports, tests/tapwire.py): a down backend gets no new flow and gets its own
Maglev entries back when it returns; `on_down: reset` moves its flows,
`keep` lets them be; a service whose backends are all down fails open, or
drops new flows with `on_all_down: drop`.

Nothing answers on the backend side here, so every health check fails
(its first verdict is final: down at once) and every checked service is
all down; `rplbctl backend disable` takes one backend further down.
"""

from __future__ import annotations

import os

import pytest
import yaml
from scapy.layers.inet import IP, TCP

import lbcheck
from healthnet import tag
from rplb.control import request
from tapwire import TapWire, client_segments, from_test_clients

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="net_tap needs root")

CHECK = {"type": "tcp", "interval": 0.2, "timeout": 0.1}
MAGLEV = 1009          # the derived size for up to ten backends


@pytest.fixture(scope="module")
def wire(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("states")
    n = tag()
    index = (os.getpid() * 11 + int(n[-2:])) % (64 * 256)
    net = f"10.{192 + index // 256}.{index % 256}"

    def service(name, vip, first, **health):
        return {"name": name, "vip": vip, "proto": "tcp", "port": 80,
                "health": {**CHECK, **health},
                "backends": [{"ip": f"{net}.{first + i}", "port": 8080} for i in range(3)]}
    config = {"health_checks": {"source": f"{net}.2/24", "interface": f"rpk{n}"},
              "services": [service("keep", "10.0.0.100", 10),
                           service("reset", "10.0.0.101", 20, on_down="reset"),
                           service("drop", "10.0.0.102", 30, on_all_down="drop")]}
    path = tmp / "services.yaml"
    path.write_text(yaml.safe_dump(config))
    wire = TapWire(tmp, rplb_args=["--config", str(path)])
    wire.config = config
    wire.socket_path = str(tmp / "rplb.sock")
    try:
        for name in ("keep", "reset", "drop"):
            wait_all_down(wire, name)
        yield wire
    finally:
        rc, _ = wire.stop()
    assert rc == 0


def listing(wire, name):
    services = request(wire.socket, {"cmd": "service.list"})["services"]
    return next(s for s in services if s["name"] == name)


def wait_all_down(wire, name, timeout=20):
    import time
    deadline = time.monotonic() + timeout
    while True:
        entry = listing(wire, name)
        if all(b["state"]["health"] == "down" for b in entry["backends"]):
            return entry
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: health checks did not fail: {entry}")
        time.sleep(0.05)


def service_of(wire, name):
    return next(s for s in wire.config["services"] if s["name"] == name)


def flows(first_port, n=40, client="100.64.0.9"):
    return [(client, first_port + i) for i in range(n)]


def backends_of(frames):
    """client port -> the backend ip:port its frame was sent to."""
    return {p[TCP].sport: (p[IP].dst, p[TCP].dport) for p in frames}


def expected(wire, name, port_flows, without=()):
    service = dict(service_of(wire, name))
    service["backends"] = [b for b in service["backends"] if b["ip"] not in without]
    return {port: lbcheck.expected_backend(service, ip, port, MAGLEV) for ip, port in port_flows}


def disable(wire, name, ip, enable=False):
    reply = request(wire.socket, {"cmd": "backend.enable" if enable else "backend.disable",
                                  "service": name, "ip": ip, "port": 8080})
    assert reply["ok"], reply


def test_all_down_fails_open_with_the_configured_backends(wire):
    entry = listing(wire, "keep")
    assert entry["failing_open"]
    assert all(b["state"]["reason"] == "no answer within 0.1 s, first check"
               for b in entry["backends"]), entry
    sent = client_segments(flows(1000), "S", vip="10.0.0.100")
    got = backends_of(wire.to_backends(sent, match=from_test_clients))
    assert got == expected(wire, "keep", flows(1000))


def test_all_down_with_on_all_down_drop_drops_new_flows(wire):
    assert not listing(wire, "drop")["failing_open"]
    before = request(wire.socket, {"cmd": "stats"})["stats"]["drops"]["no_backend"]
    sent = client_segments(flows(2000, 5), "S", vip="10.0.0.102")
    assert wire.to_backends(sent, match=from_test_clients) == []
    assert request(wire.socket, {"cmd": "stats"})["stats"]["drops"]["no_backend"] == before + 5


def test_a_disabled_backend_gets_no_new_flows_and_its_own_entries_back(wire):
    victim = service_of(wire, "keep")["backends"][1]["ip"]
    disable(wire, "keep", victim)
    try:
        state = {b["ip"]: b["state"] for b in listing(wire, "keep")["backends"]}[victim]
        assert state["disabled"] and state["state"] == "down"
        sent = client_segments(flows(3000), "S", vip="10.0.0.100")
        got = backends_of(wire.to_backends(sent, match=from_test_clients))
        assert got == expected(wire, "keep", flows(3000), without=(victim,))
        assert victim not in {ip for ip, _ in got.values()}
    finally:
        disable(wire, "keep", victim, enable=True)
    # Back, it gets the very entries it had: the same table as before.
    sent = client_segments(flows(4000), "S", vip="10.0.0.100")
    got = backends_of(wire.to_backends(sent, match=from_test_clients))
    assert got == expected(wire, "keep", flows(4000))
    assert victim in {ip for ip, _ in got.values()}


@pytest.mark.parametrize("name, vip", [("keep", "10.0.0.100"), ("reset", "10.0.0.101")])
def test_the_flows_of_a_down_backend_stay_or_move(wire, name, vip):
    """keep: a flow of a disabled backend goes on to it; reset: its next
    packet moves it to the current Maglev choice (and the backend's new
    connection is its problem: it answers with a reset)."""
    syn = client_segments(flows(5000), "S", vip=vip)
    first = backends_of(wire.to_backends(syn, match=from_test_clients))
    victim = service_of(wire, name)["backends"][0]["ip"]
    on_victim = sorted(port for port, (ip, _) in first.items() if ip == victim)
    assert on_victim, first
    moved_before = request(wire.socket, {"cmd": "stats"})["stats"]["events"]["flows_moved"]
    disable(wire, name, victim)
    try:
        ack = client_segments(flows(5000), "A", vip=vip)
        out = wire.to_backends(ack, match=from_test_clients)
    finally:
        disable(wire, name, victim, enable=True)
    moved = request(wire.socket, {"cmd": "stats"})["stats"]["events"]["flows_moved"]
    after = backends_of(out)
    assert len(after) == len(ack)
    for frame in out:
        lbcheck.assert_checksums_valid(bytes(frame))
    for port, backend in after.items():
        if first[port][0] != victim or name == "keep":
            assert backend == first[port], port
        else:
            want = expected(wire, name, [("100.64.0.9", port)], without=(victim,))[port]
            assert backend == want != first[port], port
    assert moved - moved_before == (len(on_victim) if name == "reset" else 0)


def test_a_service_added_at_run_time_is_checked_and_removed_unchecked(wire):
    net = service_of(wire, "keep")["backends"][0]["ip"].rsplit(".", 1)[0]
    service = {"name": "late", "vip": "10.0.0.103", "proto": "tcp", "port": 80,
               "health": {**CHECK, "type": "http", "path": "/ready"},
               "backends": [{"ip": f"{net}.40", "port": 8080}]}
    reply = request(wire.socket, {"cmd": "service.add", "service": service})
    assert reply["ok"], reply
    entry = wait_all_down(wire, "late")
    assert entry["backends"][0]["state"]["reason"] == "no answer within 0.1 s, first check"
    assert request(wire.socket, {"cmd": "service.del", "service": "late"})["ok"]
    assert all(s["name"] != "late"
               for s in request(wire.socket, {"cmd": "service.list"})["services"])
