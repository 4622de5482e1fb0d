"""Health checks with two workers: the kernel interface has a queue pair per
worker; the probes' replies, from the backend network to the appliance's
own address, are steered like any frame by that destination, so they reach
the one worker that owns it, which hands them to its queue of the kernel
interface, wherever af_packet's fanout put them."""

from __future__ import annotations

import json
import os

import pytest

from healthnet import HealthNet
from netns import sh
from rplb.dataplane import steering_owner
from test_health import get, services_file

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    net = HealthNet(tmp_path_factory.mktemp("health_workers"))
    try:
        net.create()
        for ip in net.backends:
            net.start_server(ip)
        net.echo = net.start_udp_echo(net.backends[2])
        net.start_rplb(services_file(net), qpairs=2, lcores="0@0,1@0,2@1")
        for ip in net.backends:
            net.wait_for_state(ip, "up", health="up")
        yield net
    finally:
        exit_status = net.destroy()
    assert exit_status == 0, "\n".join(net.rplb.stderr_lines[-30:])
    stats = json.loads((net.tmp / "stats.json").read_text())
    assert stats["mbufs_in_use_at_exit"] == 0
    assert sh("ip", "link", "show", net.kernel_if, check=False).returncode != 0


def test_the_kernel_interface_has_a_queue_pair_per_worker(net):
    status = net.request("status")
    assert status["lcores"] == [1, 2] and status["steering"] == "software"
    stats = net.request("stats")["stats"]
    assert stats["kernel_interface"]["queues"] == 2


def test_ping_to_the_appliance_and_checks_through_the_owner_of_its_address(net):
    local = net.source.split("/")[0]
    out = sh("ping", "-c", "5", "-i", "0.2", "-W", "2", local, ns=net.server_ns, check=False)
    assert "5 received" in out.stdout, out.stdout + out.stderr
    stats = net.request("stats")["stats"]
    workers = stats["workers"]
    owner = steering_owner(local, 2)
    # Every IPv4 frame for the appliance went to the kernel from the worker
    # that owns its address (the other hands them over); ARP, not IPv4,
    # from whichever received it.
    assert workers[owner]["events"]["to_kernel"] > 0
    assert stats["events"]["to_kernel"] == sum(w["events"]["to_kernel"] for w in workers)
    assert stats["drops"]["kernel_full"] == 0 and stats["drops"]["handoff_full"] == 0


def test_a_wrong_status_marks_a_backend_down_and_back(net):
    victim = net.backends[0]
    net.set_health_status(victim, 503)
    try:
        entry = net.wait_for_state(victim, "down")
        assert entry["state"]["reason"] == "HTTP 503 (expected 200), 2 checks in a row"
        assert net.names[victim] not in get(net, 20)
    finally:
        net.set_health_status(victim, 200)
    net.wait_for_state(victim, "up")
    assert net.names[victim] in get(net, 30)
