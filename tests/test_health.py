"""Health checks end to end: real HTTP and UDP servers in a namespace behind
rplb's backend port, a client opening connections through the VIP, rplb
probing from its own kernel interface (tests/healthnet.py draws it).

The checks run every second (timeout 0.5 s, rise 2, fall 2): a killed
backend must be out within interval x fall + 1 s = 3 s, a restarted one
back within interval x rise + 1 s = 3 s.
"""

from __future__ import annotations

import copy
import json
import re
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
import yaml

from healthnet import HealthNet
from netns import sh

pytestmark = pytest.mark.skipif(__import__("os").geteuid() != 0,
                                reason="network namespaces need root")

INTERVAL, TIMEOUT, RISE, FALL = 1, 0.5, 2, 2
HTTP_CHECK = {"type": "http", "path": "/healthz", "expect": [200], "interval": INTERVAL,
              "timeout": TIMEOUT, "rise": RISE, "fall": FALL}
UDP_CHECK = {"type": "udp", "payload": "ping", "reply": "ping", "interval": INTERVAL,
             "timeout": TIMEOUT, "rise": RISE, "fall": FALL}
KERNEL_RATE = 2000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def services_file(net: HealthNet, weights=(1, 1, 1), web_check=HTTP_CHECK, **top) -> dict:
    """The module's services file (a fresh copy, for the tests to change)."""
    config = copy.deepcopy(net.config(web_check, kernel_rate=KERNEL_RATE, **top))
    for backend, weight in zip(config["services"][0]["backends"], weights):
        backend["weight"] = weight
    config["services"].append({
        "name": "echo", "vip": "10.0.0.100", "proto": "udp", "port": 53, "health": UDP_CHECK,
        "backends": [{"ip": net.backends[2], "port": 5353}]})
    config["services"][-1]["health"] = dict(UDP_CHECK)
    return config


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    net = HealthNet(tmp_path_factory.mktemp("health"))
    net.prometheus = f"127.0.0.1:{free_port()}"
    try:
        net.create()
        for ip in net.backends:
            net.start_server(ip)
        net.echo = net.start_udp_echo(net.backends[2])
        net.start_rplb(services_file(net), "--prometheus", net.prometheus)
        for ip in net.backends:
            net.wait_for_state(ip, "up", health="up")
        net.wait_for_state(net.backends[2], "up", service="echo", health="up")
        yield net
    finally:
        exit_status = net.destroy()
    assert exit_status == 0, "\n".join(net.rplb.stderr_lines[-30:])
    stats = json.loads((net.tmp / "stats.json").read_text())
    assert stats["mbufs_in_use_at_exit"] == 0
    # The kernel interface went with rplb.
    assert sh("ip", "link", "show", net.kernel_if, check=False).returncode != 0


def new_flows(net: HealthNet, ip: str) -> int:
    return net.backend_states()[ip]["counters"]["new_flows"]


def state_lines(net: HealthNet, ip: str):
    return [line for line in net.rplb.stderr_lines if f"backend {ip}:" in line and
            "health:" in line]


def get(net: HealthNet, n: int):
    """n connections to the VIP, one after the other: the backends' names."""
    names = []
    for _ in range(n):
        out = net.client("curl", "-s", "-m", "3", "http://10.0.0.100/")
        assert out.returncode == 0, out.stderr
        names.append(out.stdout.strip())
    return names


def test_arp_and_ping_to_the_appliance_from_the_backend_network(net):
    local = net.source.split("/")[0]
    mac = open(f"/sys/class/net/{net.kernel_if}/address").read().strip()
    sh("ip", "neigh", "flush", "dev", net.s0, ns=net.server_ns)
    out = sh("ping", "-c", "3", "-i", "0.2", "-W", "2", local, ns=net.server_ns, check=False)
    assert "3 received" in out.stdout, out.stdout + out.stderr
    # The backend network resolved the address to the kernel interface.
    neigh = sh("ip", "neigh", "show", local, "dev", net.s0, ns=net.server_ns).stdout
    assert f"lladdr {mac}" in neigh, neigh
    # And the appliance resolved the backends (its checks reach them).
    for ip in net.backends:
        assert "lladdr" in sh("ip", "neigh", "show", ip, "dev", net.kernel_if).stdout
    stats = net.request("stats")["stats"]
    assert stats["events"]["to_kernel"] > 0 and stats["events"]["from_kernel"] > 0
    assert net.kernel_if in net.ctl("status").stdout


def reload(net: HealthNet, **changes) -> None:
    net.config_path.write_text(yaml.safe_dump(services_file(net, **changes)))
    net.rplb.signal(signal.SIGHUP)
    assert "reloaded" in net.rplb.wait_for_stderr("SIGHUP")


def test_a_killed_backend_is_out_within_the_window_and_back_after_restart(net):
    victim, name = net.backends[1], net.names[net.backends[1]]
    down_window, up_window = INTERVAL * FALL + 1, INTERVAL * RISE + 1
    # The victim takes two thirds of the new flows, so that the ten or so
    # connections before it is found down surely reach it (with equal
    # weights, none would in one run of 60).
    reload(net, weights=(1, 4, 1))
    lines_before = len(state_lines(net, victim))
    client = net.start_client(period=0.1)
    try:
        time.sleep(1.0)                  # steady traffic before the kill
        killed = net.kill_server(victim)
        entry = net.wait_for_state(victim, "down", timeout=down_window + 5)
        down_seen = time.time()
        assert entry["state"]["reason"].startswith("connection refused"), entry
        flows_when_down = new_flows(net, victim)
        # Attempts well past the window, all of which must succeed.
        while time.time() < killed + down_window + 2:
            time.sleep(0.1)
        assert new_flows(net, victim) == flows_when_down, "new flows reached a down backend"
        net.start_server(victim)
        restarted = time.time()
        net.wait_for_state(victim, "up", timeout=up_window + 5)
        up_seen = time.time()
        while time.time() < up_seen + 1.5:
            time.sleep(0.1)
    finally:
        attempts = client.stop()
        reload(net)
    after_kill = [a for a in attempts if a["t"] >= killed]
    failed = [a for a in after_kill if "error" in a]
    late = [a for a in failed if a["t"] > killed + down_window]
    first_back = next((a["t"] for a in attempts
                       if a["t"] >= restarted and a.get("backend") == name), None)
    report = (f"killed backend {victim}: marked down after {down_seen - killed:.2f} s, "
              f"{len(failed)} of {len([a for a in after_kill if a['t'] <= killed + down_window])}"
              f" connections failed within the {down_window} s window, "
              f"{len([a for a in after_kill if a['t'] > killed + down_window and a['t'] < restarted])}"
              f" after it all succeeded; restarted: up after {up_seen - restarted:.2f} s, first "
              f"connection to it {first_back - restarted if first_back else float('nan'):.2f} s "
              f"after the restart (window {up_window} s)")
    print("\n" + report)
    (net.tmp / "windows.txt").write_text(report + "\n")
    assert not late, f"connections failed after the window: {late}; {report}"
    assert failed, "no connection went to the killed backend: the test proves nothing"
    assert all("error" not in a for a in attempts if a["t"] < killed), "failures before the kill"
    assert all(a.get("backend") != name for a in after_kill if a["t"] < restarted)
    assert first_back is not None and first_back - restarted <= up_window, report
    assert not [a for a in attempts if a["t"] >= restarted and "error" in a]
    # One log line per change: down, then up.
    lines = state_lines(net, victim)[lines_before:]
    assert len(lines) == 2 and " down: connection refused" in lines[0] and " up: HTTP 200" \
        in lines[1], lines


def test_a_wrong_http_status_marks_a_backend_down(net):
    victim = net.backends[0]
    net.set_health_status(victim, 503)
    try:
        entry = net.wait_for_state(victim, "down")
        assert entry["state"]["health"] == "down"
        assert entry["state"]["reason"] == "HTTP 503 (expected 200), 2 checks in a row"
        before = new_flows(net, victim)
        assert net.names[victim] not in get(net, 20)
        assert new_flows(net, victim) == before
        listing = net.ctl("service", "list").stdout
        assert re.search(rf"{re.escape(victim)}:8080 .* down \(health down: HTTP 503", listing), \
            listing
        status = net.ctl("status").stdout
        assert f"backends down: 1:\n  web: {victim}:8080 down (health down: HTTP 503 " \
               "(expected 200), 2 checks in a row)" in status, status
    finally:
        net.set_health_status(victim, 200)
    net.wait_for_state(victim, "up")
    assert net.names[victim] in get(net, 30)


def test_a_udp_check_sees_a_dead_server(net):
    ip = net.backends[2]
    net.echo.kill()
    net.echo.wait()
    entry = net.wait_for_state(ip, "down", service="echo")
    assert entry["state"]["reason"].startswith("port unreachable"), entry
    # The only backend is down: the service fails open.
    listed = [s for s in net.request("service.list")["services"] if s["name"] == "echo"][0]
    assert listed["failing_open"]
    net.echo = net.start_udp_echo(ip)
    net.wait_for_state(ip, "up", service="echo")
    program = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
               "s.settimeout(3); s.sendto(b'hello', ('10.0.0.100', 53)); "
               "print(s.recvfrom(100)[0].decode())")
    assert net.client("python3", "-c", program).stdout.strip() == "backend3:hello"


def prometheus_up(net: HealthNet) -> dict:
    text = urllib.request.urlopen(f"http://{net.prometheus}/metrics", timeout=10).read().decode()
    return {m.group(1): int(m.group(2)) for m in re.finditer(
        r'^rplb_backend_up\{service="web",key="[^"]*",backend="([^"]*)"\} (\d+)$', text, re.M)}


def telemetry_services(net: HealthNet) -> dict:
    path = f"/var/run/dpdk/{net.rplb.prefix}/dpdk_telemetry.v2"
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(10)
        s.connect(path)
        json.loads(s.recv(16384))
        s.send(b"/rplb/services")
        return json.loads(s.recv(65536))["/rplb/services"]


def wait_until(what, predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


def test_disable_and_enable_with_a_reload_in_between(net):
    victim = net.backends[1]
    label = f"{victim}:8080"
    health_since = {ip: e["state"]["since"] for ip, e in net.backend_states().items()}
    out = net.ctl("backend", "disable", "web", label)
    assert out.stdout.strip() == f"web: backend {label} disabled: no new flows until rplbctl " \
                                 "backend enable"
    assert "run-time state" in out.stderr
    state = net.backend_states()[victim]["state"]
    assert (state["state"], state["health"], state["disabled"]) == ("down", "up", True)
    assert f"  web: {label} down (disabled; health up)" in net.ctl("status").stdout
    assert prometheus_up(net) == {f"{ip}:8080": int(ip != victim) for ip in net.backends}
    wait_until("telemetry shows the backend down",
               lambda: telemetry_services(net)["web"]["backend/1/up"] == 0)
    assert telemetry_services(net)["web"]["backend/1/state"] == "down: disabled"
    before = new_flows(net, victim)
    assert net.names[victim] not in get(net, 20)
    assert new_flows(net, victim) == before

    # A reload that changes the service keeps the disabled backend down,
    # and every health state as it was: no flap.
    lines = len(net.rplb.stderr_lines)
    reload(net, weights=(1, 1, 2))
    states = net.backend_states()
    assert states[net.backends[2]]["weight"] == 2
    assert states[victim]["state"]["disabled"] and states[victim]["state"]["state"] == "down"
    assert {ip: e["state"]["since"] for ip, e in states.items() if ip != victim} == \
        {ip: s for ip, s in health_since.items() if ip != victim}
    assert net.names[victim] not in get(net, 20)
    # The health checks kept running through the reload, with no change.
    assert not [line for line in net.rplb.stderr_lines[lines:] if "health:" in line]

    # save writes the configuration, not the run-time state.
    saved = net.tmp / "saved.yaml"
    net.ctl("save", str(saved))
    assert "disabled" not in saved.read_text()

    out = net.ctl("backend", "enable", "web", label)
    assert out.stdout.strip() == f"web: backend {label} enabled"
    assert net.backend_states()[victim]["state"]["state"] == "up"
    assert prometheus_up(net)[label] == 1
    assert net.names[victim] in get(net, 30)
    # Enabling twice says so; an unknown backend is an error that names it.
    assert "already enabled" in net.ctl("backend", "enable", "web", label).stdout
    bad = net.ctl("backend", "disable", "web", f"{net.net}.99:8080", check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip() == (f"rplbctl: error: backend disable: service web has no "
                                  f"backend {net.net}.99:8080")
    reload(net)


def test_a_flood_to_the_appliance_leaves_forwarding_untouched(net):
    local = net.source.split("/")[0]
    drops_before = net.request("stats")["stats"]["drops"]["kernel_rate"]
    lines = len(net.rplb.stderr_lines)
    # 20,000 frames a second from an address that is no backend's, ten
    # times the kernel_rate.
    flood = subprocess.Popen(["ip", "netns", "exec", net.server_ns, "hping3", "--udp", "-q",
                              "-i", "u50", "-a", f"{net.net}.99", "-p", "9", local],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = net.start_client(period=0.1)
    try:
        wait_until("the flood is dropped",
                   lambda: net.request("stats")["stats"]["drops"]["kernel_rate"] >
                   drops_before + 5 * KERNEL_RATE, timeout=30)
        # The checks go on, two rounds of them at least: their replies come
        # from the backends' addresses, which have a budget of their own.
        probes = net.request("status")["health_checks"]["probes"]
        checked = net.request("status")["health_checks"]["checked"]
        wait_until("two rounds of checks during the flood",
                   lambda: net.request("status")["health_checks"]["probes"] >=
                   probes + 2 * checked, timeout=10)
    finally:
        attempts = client.stop()
        flood.kill()
        flood.wait()
    assert len(attempts) >= 20
    assert all("error" not in a for a in attempts), [a for a in attempts if "error" in a]
    assert {a["backend"] for a in attempts} == set(net.names.values())
    assert not [line for line in net.rplb.stderr_lines[lines:] if "health:" in line]
    assert all(e["state"]["state"] == "up" for e in net.backend_states().values())
    assert net.request("status")["backends_down"] == []
    out = sh("ping", "-c", "2", "-i", "0.2", "-W", "2", local, ns=net.server_ns, check=False)
    assert "2 received" in out.stdout, out.stdout


def test_bad_health_settings_at_run_time_change_nothing(net):
    def snapshot():
        reply = net.request("service.list")
        services = [{k: v for k, v in s.items() if k != "counters"} for s in reply["services"]]
        for s in services:
            for b in s["backends"]:
                b.pop("counters")
        return services, net.request("stats")["stats"]["events"]["tables_seen"]
    from rplb.control import request
    before = snapshot()
    bad_service = {"name": "web2", "vip": "10.0.0.101", "proto": "tcp", "port": 80,
                   "health": {"type": "http", "interval": 0},
                   "backends": [{"ip": net.backends[0], "port": 8080}]}
    reply = request(str(net.socket), {"cmd": "service.add", "service": bad_service})
    assert reply == {"ok": False, "error": "service add: services[2] (web2): health.interval: "
                                           "0 s is outside 0.1-3600 s"}
    bad_file = services_file(net)
    bad_file["services"][0]["health"]["rise"] = 0
    net.config_path.write_text(yaml.safe_dump(bad_file))
    out = net.ctl("reload", check=False)
    assert out.returncode == 1
    assert "reload failed, the running configuration keeps serving: " in out.stderr
    assert "services[0] (web): health.rise: 0 is outside 1-100" in out.stderr
    moved = services_file(net)
    moved["health_checks"]["source"] = f"{net.net}.3/24"
    net.config_path.write_text(yaml.safe_dump(moved))
    out = net.ctl("reload", check=False)
    assert out.returncode == 1 and "health_checks: cannot change while rplb runs" in out.stderr
    assert f"running with source: {net.source}" in out.stderr
    net.config_path.write_text(yaml.safe_dump(services_file(net)))
    assert snapshot() == before
