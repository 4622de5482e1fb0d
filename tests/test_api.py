"""The Python API for programs that embed rplb (EAL: one per process, so the
program runs in a subprocess)."""

import json
import subprocess
import sys
from pathlib import Path

from scapy.layers.inet import IP, TCP
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
from rplb.tables import MAX_BACKENDS, build_specs

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
        ["ntp", [["192.168.5.1:123", 1]]],
    ]
    assert result["mbufs_in_use_at_exit"] == 0


SLOT_PROGRAM = PREAMBLE + r"""
try:
    app.start()
    bal = app.balancer
    seen = lambda: app.counters()["events"]["tables_seen"]
    specs = build_specs(bal.config, bal._ids.service_ids, bal._ids.backend_ids, bal._dtypes)
    before = seen()
    # Two backends in one slot (same low bits, another generation): the C
    # tables refuse them, whatever the control plane above them does.
    bad = specs.backends.copy()
    bad["backend_id"][1] = bad["backend_id"][0] + MAX_BACKENDS
    try:
        bal._lb.publish(specs.services, bad, specs.maglev, specs.maglev_size)
        result["error"] = None
    except RplbError as err:
        result["error"], result["errno"] = str(err), err.errno
    result["published_after_error"] = seen() - before
    bal._lb.publish(specs.services, specs.backends, specs.maglev, specs.maglev_size)
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
    assert "cannot build load-balancing tables" in result["error"]
    assert "share slot" in proc.stderr      # the DPDK log names both specs
    assert result["published_after_error"] == 0
    assert result["published_after_good"] == 1


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
    pool = bal._ids._backend_slots
    freed = [slot for slot in pool.free if slot < 3]
    for slot in freed:
        pool.free.remove(slot)
    pool.free.extendleft(reversed(freed))
    for i in range(3):
        bal.add_backend("web", Backend(ip=f"192.168.1.{40 + i}", port=8080))
    result["reused_slots"] = sorted(bal._ids.backend_ids[(bal.config.service("web").key,
                                                          f"192.168.1.{40 + i}", 8080)]
                                    & (MAX_BACKENDS - 1) for i in range(3))
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
