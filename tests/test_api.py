"""The Python API for programs that embed rplb (EAL: one per process, so the
program runs in a subprocess)."""

import json
import subprocess
import sys
from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from harness import eal_args, file_prefix, remove_runtime_dir, write_pcap

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "services.yaml"

# Each program runs the example appliance and prints its `result` last.
PREAMBLE = r"""
import json, sys, time
import rplb
from rplb import Backend, ConfigError, Service, load_config
from rplb.errors import RplbError
from rplb import contract

eal, config_path = json.loads(sys.argv[1]), sys.argv[2]
app = rplb.Appliance(eal, rplb.Options(config=load_config(config_path)))
result = {}

# Poll observable state (a publish returns once the worker passed a
# quiescent state; the worker counts the new generation just after).
def wait_until(what, predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)
"""

PROGRAM = PREAMBLE + r"""
try:
    app.start()
    bal = app.balancer
    def seen():
        return app.counters()["events"]["tables_seen"]
    # The configuration is published before the worker starts: it sees
    # exactly one generation at its first loop iteration.
    wait_until("the worker saw the first tables", lambda: seen() >= 1)
    result["tables_seen_start"] = seen()
    bal.add_backend("web", Backend(ip="192.168.1.13", port=8080, weight=7))
    bal.set_weight("web", "192.168.1.11", 8080, 0)
    bal.add_service(Service(vip="10.0.0.102", proto="udp", port=123, name="ntp",
                            backends=(Backend(ip="192.168.5.1", port=123),)))
    bal.remove_backend("api", "192.168.1.31", 8443)
    wait_until("the worker saw four generations more",
               lambda: seen() >= result["tables_seen_start"] + 4)
    result["tables_seen_after_edits"] = seen()
    before = bal.config
    errors = []
    for edit in (lambda: bal.add_backend("web", Backend(ip="192.168.1.13", port=8080)),
                 lambda: bal.remove_service("nope"),
                 lambda: bal.set_weight("web", "192.168.1.10", 8080, 70000),
                 lambda: bal.add_service(Service(vip="10.0.0.100", proto="tcp", port=80))):
        try:
            edit()
        except ConfigError as err:
            errors.append(str(err))
    result["errors"] = errors
    result["unchanged"] = bal.config == before
    # A barrier: one good edit more.  Had a refused edit published
    # anything, the worker would now have seen two generations, not one.
    bal.set_weight("web", "192.168.1.12", 8080, 2)
    wait_until("the worker saw the barrier's tables",
               lambda: seen() >= result["tables_seen_after_edits"] + 1)
    result["tables_seen_after_errors"] = seen() - 1
    result["services"] = [(s["service"], [(b["backend"], b["weight"]) for b in s["backends"]])
                          for s in bal.service_stats()]
finally:
    app.close()
result["mbufs_in_use_at_exit"] = app.mbufs_in_use_at_exit
print(json.dumps(result))
"""


def run_program(tmp_path, program, client_frames=()):
    """Run one program on pcap ports (the clients' port reads client_frames
    once); (its result, the process)."""
    prefix = file_prefix()
    empty = write_pcap(tmp_path / "empty.pcap", [])
    clients = write_pcap(tmp_path / "clients.pcap", client_frames)
    eal = eal_args(prefix, [f"net_pcap0,rx_pcap={clients},tx_pcap={tmp_path}/o0.pcap",
                            f"net_pcap1,rx_pcap={empty},tx_pcap={tmp_path}/o1.pcap"])
    try:
        proc = subprocess.run([sys.executable, "-c", program, json.dumps(eal), str(EXAMPLE)],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
    finally:
        remove_runtime_dir(prefix)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc


def test_edits_through_the_api_are_atomic_and_invalid_ones_change_nothing(tmp_path):
    result, _ = run_program(tmp_path, PROGRAM)
    # Each successful edit published one new table generation; the worker saw it.
    assert result["tables_seen_after_edits"] == result["tables_seen_start"] + 4
    assert len(result["errors"]) == 4
    assert "192.168.1.13:8080" in result["errors"][0] and "nope" in result["errors"][1]
    assert "70000" in result["errors"][2] and "10.0.0.100:tcp:80" in result["errors"][3]
    assert result["unchanged"]
    assert result["tables_seen_after_errors"] == result["tables_seen_after_edits"]
    assert result["services"] == [
        ["web", [["192.168.1.10:8080", 10], ["192.168.1.11:8080", 0], ["192.168.1.12:8080", 2],
                 ["192.168.1.13:8080", 7]]],
        ["dns", [["192.168.1.20:5353", 1], ["192.168.1.21:5353", 1]]],
        ["api", [["192.168.1.30:8443", 1]]],
        ["web6", [["[fd00:1::10]:8080", 2], ["[fd00:1::11]:8080", 1]]],
        ["ntp", [["192.168.5.1:123", 1]]],
    ]
    assert result["mbufs_in_use_at_exit"] == 0


SLOT_PROGRAM = PREAMBLE + r"""
try:
    app.start()
    bal = app.balancer
    seen = lambda: app.counters()["events"]["tables_seen"]
    services, backends, maglevs = bal._tables.arrays()
    timeouts = bal.config.timeouts
    before = seen()
    # Two backends in one slot (same low bits, another generation): the C
    # tables refuse them, whatever the control plane above them does.
    bad = backends.copy()
    bad["backend_id"][1] = contract.backend_id(contract.backend_slot(bad["backend_id"][0]), 9)
    try:
        bal._lb.publish(services, bad, maglevs, timeouts)
        result["error"] = None
    except RplbError as err:
        result["error"], result["errno"] = str(err), err.errno
    result["published_after_error"] = seen() - before
    bal._lb.publish(services, backends, maglevs, timeouts)
    # Had the refused publish gone through, this would count two.
    wait_until("the worker saw the good tables", lambda: seen() > before)
    result["published_after_good"] = seen() - before
finally:
    app.close()
print(json.dumps(result))
"""


def test_tables_refuse_two_backends_in_one_slot(tmp_path):
    """Backends sit at their id's slot in the worker's tables, so the C
    layer itself rejects a second backend for a slot, and nothing changes."""
    result, proc = run_program(tmp_path, SLOT_PROGRAM)
    assert result["errno"] == 22, result
    assert "cannot publish load-balancing tables" in result["error"]
    assert "share slot" in proc.stderr      # the DPDK log names both specs
    assert result["published_after_error"] == 0
    assert result["published_after_good"] == 1


PUBLISH_PROGRAM = PREAMBLE + r"""
import numpy as np
try:
    app.start()
    bal = app.balancer
    services, backends, maglevs = bal._tables.arrays()
    timeouts = bal.config.timeouts
    attempts = {
        "services as a list": lambda: bal._lb.publish(list(services), backends, maglevs,
                                                       timeouts),
        "backends of the wrong dtype": lambda: bal._lb.publish(
            services, backends.astype([(n, "<u8") for n in backends.dtype.names]), maglevs,
            timeouts),
        "services not contiguous": lambda: bal._lb.publish(
            np.repeat(services, 2)[::2], backends, maglevs, timeouts),
        "a Maglev table short": lambda: bal._lb.publish(services, backends, maglevs[:-1],
                                                         timeouts),
        "not a Maglev table": lambda: bal._lb.publish(services, backends,
                                                      [np.zeros(3)] * len(maglevs), timeouts),
        "a timeout of zero": lambda: bal._lb.publish(services, backends, maglevs,
                                                     {**timeouts.__dict__, "udp": 0}),
        "a table naming another service's backend": lambda: bal._lb.publish(
            services, backends, maglevs[::-1], timeouts),
    }
    result["errors"] = {}
    for name, attempt in attempts.items():
        try:
            attempt()
            result["errors"][name] = None
        except RplbError as err:
            result["errors"][name] = [err.errno, str(err)]
    result["tables_seen"] = app.counters()["events"]["tables_seen"]
    bal.set_weight("web", "192.168.1.10", 8080, 3)     # still works
    result["still_works"] = True
finally:
    app.close()
print(json.dumps(result))
"""


def test_publish_checks_the_arrays_it_hands_to_c(tmp_path):
    """publish() refuses, naming the array, what C would misread: a wrong
    dtype or layout, a Maglev table list that does not match the services;
    C itself refuses a Maglev table of another service and a bad timeout.
    Nothing is published then."""
    result, proc = run_program(tmp_path, PUBLISH_PROGRAM)
    errors = result["errors"]
    assert all(e is not None and e[0] == 22 for e in errors.values()), errors
    assert "services must be a numpy array" in errors["services as a list"][1]
    assert "backends has dtype" in errors["backends of the wrong dtype"][1]
    assert "services must be a flat, C-contiguous array" in errors["services not contiguous"][1]
    assert "3 Maglev tables for 4 services" in errors["a Maglev table short"][1]
    assert "maglevs[0] is a ndarray, not a MaglevTable" in errors["not a Maglev table"][1]
    assert "timeout of flow state udp is 0 s" in proc.stderr
    assert "which is not one of the service's" in proc.stderr
    assert result["still_works"]


COUNTER_PROGRAM = PREAMBLE + r"""
def web():
    return next(s for s in bal.service_stats() if s["service"] == "web")

try:
    app.start()
    bal = app.balancer
    wait_until("the 30 frames were forwarded", lambda: web()["packets"] >= 30)
    result["before"] = web()
    # Every backend that took flows goes; a new one stays.
    bal.add_backend("web", Backend(ip="192.168.1.19", port=8080))
    for b in result["before"]["backends"]:
        ip, port = b["backend"].split(":")
        bal.remove_backend("web", ip, int(port))
    result["after_removal"] = web()
    # The removed backends' counter slots are taken next (the pool hands
    # out the longest-free slot first: move them to its front).
    pool = bal._tables.backend_slots
    freed = [slot for slot in pool.free if slot < 3]
    for slot in freed:
        pool.free.remove(slot)
    pool.free.extendleft(reversed(freed))
    for i in range(3):
        bal.add_backend("web", Backend(ip=f"192.168.1.{40 + i}", port=8080))
    placed = bal._view[1][bal.config.service("web").key]
    result["reused_slots"] = sorted(placed.backend_slots[-3:])
    result["after_reuse"] = web()
    # The same vip:proto:port removed and added again is a new service.
    service = bal.config.service("web")
    bal.remove_service("web")
    bal.add_service(service)
    result["readded"] = web()
finally:
    app.close()
print(json.dumps(result))
"""


def test_service_totals_keep_the_packets_of_removed_backends(tmp_path):
    """The fast path counts a flow's packets under its backend only; the
    control plane adds a service's up, and keeps what removed backends
    counted, also once their counter slots serve new backends."""
    frames = [Ether() / IP(src=f"100.64.0.{i + 1}", dst="10.0.0.100")
              / TCP(sport=5000 + i, dport=80, flags="S") / Raw(b"x" * i) for i in range(30)]
    result, _ = run_program(tmp_path, COUNTER_PROGRAM, frames)
    before = result["before"]
    assert before["packets"] == 30 and before["new_flows"] == 30
    assert before["bytes"] == sum(len(f) for f in frames)
    assert sum(b["packets"] for b in before["backends"]) == 30
    for stage in ("after_removal", "after_reuse"):
        svc = result[stage]
        assert (svc["packets"], svc["bytes"]) == (30, before["bytes"]), stage
        assert all(b["packets"] == 0 for b in svc["backends"]), stage
    assert result["reused_slots"] == [0, 1, 2]
    assert len(result["after_reuse"]["backends"]) == 4
    readded = result["readded"]
    assert (readded["packets"], readded["bytes"], readded["new_flows"]) == (0, 0, 0)


REUSE_PROGRAM = PREAMBLE + r"""
import dataclasses
from rplb.config import Timeouts

def web():
    return next(s for s in bal.service_stats() if s["service"] == "web")

def wait(what, until, seconds=20):
    deadline = time.monotonic() + seconds
    while not until() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert until(), what

try:
    app.start()
    bal = app.balancer
    wait("flows", lambda: web()["new_flows"] == 30)
    result["before"] = web()
    old = [b["backend"].split(":") for b in result["before"]["backends"]]
    for ip, port in old:
        bal.remove_backend("web", ip, int(port))
    # Their flows are still stored: the slots they counted in are retired,
    # still the service's.
    result["after_removal"] = web()
    pool = bal._tables.backend_slots
    freed = [slot for slot in pool.free if slot < 3]
    for slot in freed:
        pool.free.remove(slot)
    pool.free.extendleft(reversed(freed))
    for i in range(3):
        bal.add_backend("web", Backend(ip=f"192.168.1.{40 + i}", port=8080))
    result["reused_slots"] = sorted(bal._view[1][bal.config.service("web").key].backend_slots)
    result["after_reuse"] = web()
    # The old flows expire (SYN only: tcp_syn); they must not count down
    # the slots' new backends.
    bal.apply(dataclasses.replace(bal.config, timeouts=Timeouts(tcp_syn=1)))
    wait("expiry", lambda: app.counters()["events"]["flows_expired"] == 30)
    result["after_expiry"] = web()
finally:
    app.close()
print(json.dumps(result))
"""


def test_a_reused_backend_slot_starts_with_no_active_flows(tmp_path):
    """A removed backend's slot, taken by a new backend, counts the new
    backend's flows only: the worker zeroes it when it adopts the tables
    that hand it over, and the old backend's flows no longer count it down
    when they end (before, the new backend inherited 30 active flows, and
    went negative as they expired)."""
    frames = [Ether() / IP(src=f"100.64.0.{i + 1}", dst="10.0.0.100")
              / TCP(sport=5000 + i, dport=80, flags="S") for i in range(30)]
    result, _ = run_program(tmp_path, REUSE_PROGRAM, frames)
    assert result["before"]["active_flows"] == 30
    assert sum(b["active_flows"] for b in result["before"]["backends"]) == 30
    assert result["after_removal"]["active_flows"] == 30       # retired slots still count
    assert result["after_removal"]["backends"] == []
    assert result["reused_slots"] == [0, 1, 2]
    for stage in ("after_reuse", "after_expiry"):
        backends = result[stage]["backends"]
        assert [b["active_flows"] for b in backends] == [0, 0, 0], stage
        assert result[stage]["active_flows"] == 0, stage
        assert result[stage]["new_flows"] == 30, stage          # history stays


TIMEOUT_PROGRAM = PREAMBLE + r"""
import dataclasses
from rplb.config import Timeouts

def events():
    return app.counters()["events"]

def wait(what, until, seconds=20):
    deadline = time.monotonic() + seconds
    while not until() and time.monotonic() < deadline:
        time.sleep(0.02)
    return until()

try:
    app.start()
    bal = app.balancer
    assert wait("flows", lambda: events()["flows_created"] == 5)
    services, backends, maglevs = bal._tables.arrays()
    short = Timeouts(udp=1)
    # Tables C refuses (two backends in one slot), with a 1-s UDP timeout:
    # nothing may change, the timeout included.
    bad = backends.copy()
    bad["backend_id"][1] = contract.backend_id(contract.backend_slot(bad["backend_id"][0]), 9)
    try:
        bal._lb.publish(services, bad, maglevs, short)
    except RplbError as err:
        result["refused"] = err.errno
    # Three times the short timeout (the aging sweep of this small table
    # is far quicker): the flows stay.
    result["expired_after_refused"] = 0 if not wait(
        "expiry", lambda: events()["flows_expired"] > 0, 3) else events()["flows_expired"]
    # The same timeout in tables that are accepted takes effect.
    bal.apply(dataclasses.replace(bal.config, timeouts=short))
    result["expired_after_applied"] = wait("expiry", lambda: events()["flows_expired"] == 5)
finally:
    app.close()
print(json.dumps(result))
"""


def test_a_refused_publish_changes_no_timeout(tmp_path):
    """Timeouts are published with the tables: tables C refuses change no
    timeout (before, they were set ahead of the publish, which then failed)."""
    frames = [Ether() / IP(src=f"100.64.0.{i + 1}", dst="10.0.0.100")
              / UDP(sport=5000 + i, dport=53) / Raw(b"q") for i in range(5)]
    result, _ = run_program(tmp_path, TIMEOUT_PROGRAM, frames)
    assert result["refused"] == 22
    assert result["expired_after_refused"] == 0
    assert result["expired_after_applied"] is True


ROLLBACK_PROGRAM = PREAMBLE + r"""
class RefusingOnce:
    '''The real LoadBalancer, whose next publish is refused as C refuses
    tables it cannot build (ENOMEM).'''
    def __init__(self, lb):
        self.lb, self.refuse = lb, True
    def __getattr__(self, name):
        return getattr(self.lb, name)
    def publish(self, *args, **kwargs):
        if self.refuse:
            self.refuse = False
            raise RplbError(12, "cannot publish load-balancing tables", "Out of memory")
        return self.lb.publish(*args, **kwargs)

try:
    app.start()
    bal = app.balancer
    before = (bal.config, bal._tables.arrays()[0].copy(), bal._tables.arrays()[1].copy(),
              list(bal._tables.backend_slots.free)[:8], dict(bal._view[1]))
    bal._lb = RefusingOnce(bal._lb)
    try:
        bal.add_service(Service(vip="10.0.0.102", proto="udp", port=123, name="ntp",
                                backends=(Backend(ip="192.168.5.1", port=123),)))
    except RplbError as err:
        result["error"] = err.errno
    after = (bal.config, bal._tables.arrays()[0], bal._tables.arrays()[1],
             list(bal._tables.backend_slots.free)[:8], bal._view[1])
    result["config_unchanged"] = after[0] is before[0]
    result["specs_unchanged"] = (after[1].tobytes() == before[1].tobytes()
                                 and after[2].tobytes() == before[2].tobytes())
    result["slots_unchanged"] = after[3] == before[3]
    result["placed_unchanged"] = after[4] == before[4]
    # The same edit, now accepted, and one more.
    bal.add_service(Service(vip="10.0.0.102", proto="udp", port=123, name="ntp",
                            backends=(Backend(ip="192.168.5.1", port=123),)))
    bal.remove_backend("web", "192.168.1.11", 8080)
    result["services"] = [(s["service"], [b["backend"] for b in s["backends"]])
                          for s in bal.service_stats()]
    result["rows"] = [len(a) for a in bal._tables.arrays()]
finally:
    app.close()
print(json.dumps(result))
"""


def test_a_failed_publish_leaves_the_control_plane_as_it_was(tmp_path):
    """When the tables cannot be published, the ids, spec rows and Maglev
    tables planned for the change are rolled back: the next change starts
    from the published state."""
    result, _ = run_program(tmp_path, ROLLBACK_PROGRAM)
    assert result["error"] == 12
    assert result["config_unchanged"] and result["specs_unchanged"]
    assert result["slots_unchanged"] and result["placed_unchanged"]
    assert result["services"] == [
        ["web", ["192.168.1.10:8080", "192.168.1.12:8080"]],
        ["dns", ["192.168.1.20:5353", "192.168.1.21:5353"]],
        ["api", ["192.168.1.30:8443", "192.168.1.31:8443"]],
        ["web6", ["[fd00:1::10]:8080", "[fd00:1::11]:8080"]],
        ["ntp", ["192.168.5.1:123"]],
    ]
    assert result["rows"] == [5, 9, 5]


RESTART_PROGRAM = PREAMBLE + r"""
def web():
    return next(s for s in bal.service_stats() if s["service"] == "web")

try:
    app.start()
    bal = app.balancer
    deadline = time.monotonic() + 20
    while web()["new_flows"] < 30 and time.monotonic() < deadline:
        time.sleep(0.02)
    # The worker stops; meanwhile two generations are published (it adopts
    # neither), the second handing web's slots to new backends.
    app.stop_workers()
    old = [b["backend"].split(":") for b in web()["backends"]]
    for ip, port in old:
        bal.remove_backend("web", ip, int(port))
    pool = bal._tables.backend_slots
    freed = [slot for slot in pool.free if slot < 3]
    for slot in freed:
        pool.free.remove(slot)
    pool.free.extendleft(reversed(freed))
    for i in range(3):
        bal.add_backend("web", Backend(ip=f"192.168.1.{40 + i}", port=8080))
    for worker in app.workers:
        worker.launch()
    seen = app.counters()["events"]["tables_seen"]
    deadline = time.monotonic() + 20
    while app.counters()["events"]["tables_seen"] == seen and time.monotonic() < deadline:
        time.sleep(0.01)
    result["after_restart"] = web()
finally:
    app.close()
print(json.dumps(result))
"""


def test_a_restarted_worker_catches_up_on_reused_slots(tmp_path):
    """A worker that missed generations (it was stopped) looks at every
    slot when it adopts the current one: the slots handed over meanwhile
    start from zero on it too."""
    frames = [Ether() / IP(src=f"100.64.0.{i + 1}", dst="10.0.0.100")
              / TCP(sport=5000 + i, dport=80, flags="S") for i in range(30)]
    result, _ = run_program(tmp_path, RESTART_PROGRAM, frames)
    after = result["after_restart"]
    assert [b["active_flows"] for b in after["backends"]] == [0, 0, 0]
    assert after["active_flows"] == 0 and after["new_flows"] == 30


BUDGET_PROGRAM = PREAMBLE + r"""
import dataclasses, ipaddress
try:
    app.start()
    bal = app.balancer
    seen = app.counters()["events"]["tables_seen"]
    before = bal.config
    # Built by Config's constructor (which validates nothing): 300 services
    # of a million Maglev entries each would take over 2 GB.
    services = tuple(Service(vip=ipaddress.IPv4Address("10.1.0.1") + i, proto="tcp", port=80,
                             backends=(Backend(ip=ipaddress.IPv4Address("10.2.0.1") + i,
                                               port=80),))
                     for i in range(300))
    huge = dataclasses.replace(bal.config, services=services, maglev_table_size=1000003)
    try:
        bal.apply(huge)
    except ConfigError as err:
        result["error"] = str(err)
    result["unchanged"] = bal.config is before
    result["published"] = app.counters()["events"]["tables_seen"] - seen
finally:
    app.close()
print(json.dumps(result))
"""


def test_the_balancer_refuses_tables_over_the_budget_whatever_built_the_config(tmp_path):
    """Nothing lets services x Maglev size ask for gigabytes unchecked: a
    Config that never went through the validator is held to its
    tables_memory_mb before anything is built."""
    result, _ = run_program(tmp_path, BUDGET_PROGRAM)
    assert "tables_memory_mb: the load-balancing tables would need" in result["error"]
    assert "more than tables_memory_mb 512" in result["error"]
    assert result["unchanged"] and result["published"] == 0
