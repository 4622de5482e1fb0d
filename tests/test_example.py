"""The shipped example (examples/): its round trip, checked independently of
show.py.  Every client flow's frames reach a backend of its service with
only the destination rewritten; every reply comes back to its client from
vip:port, found through the flow rplb made (to_client_by_flow); checksums
recomputed with scapy.  run.py runs here as run.sh runs it, minus the
bootstrap (the suite already runs from the installed rplb)."""

import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

from lbcheck import assert_checksums_valid

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    out = tmp_path_factory.mktemp("example")
    proc = subprocess.run([sys.executable, str(EXAMPLES / "run.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    captures = {name: rdpcap(str(out / f"{name}.pcap"))
                for name in ("clients", "servers", "to-clients", "to-servers")}
    return proc, captures, json.loads((out / "stats.json").read_text()), out


def test_it_never_meets_another_rplb(example):
    # its own control socket (in its folder) and its own EAL file prefix:
    # an rplb-dpdk on the default /run/rplb/rplb.sock or prefix is not touched
    proc, _, _, out = example
    command = proc.stdout.splitlines()[0]
    assert command.startswith("$ rplb-dpdk ")
    words = command.split()
    assert words[words.index("--control-socket") + 1] == f"{out}/rplb.sock"
    assert re.fullmatch(r"rplb-example-\d+", words[words.index("--file-prefix") + 1])
    assert not (out / "rplb.sock").exists()           # removed at exit


def services():
    from rplb.config import load_config
    return {(s.proto, str(s.vip), s.port): s for s in load_config(EXAMPLES / "services.yaml")
            .services}


def l4(frame):
    return frame[TCP] if TCP in frame else frame[UDP] if UDP in frame else None


def client_flows(frames):
    """{(proto, client ip, client port): [frames]} of the frames to a service."""
    table = services()
    flows = defaultdict(list)
    for frame in frames:
        if IP in frame and l4(frame) is not None:
            proto = "tcp" if TCP in frame else "udp"
            if (proto, frame[IP].dst, l4(frame).dport) in table:
                flows[(proto, frame[IP].src, l4(frame).sport)].append(frame)
    return flows


def test_every_client_flow_reaches_a_backend_and_its_replies_come_back_from_the_vip(example):
    _, captures, stats, _ = example
    table = services()
    flows = client_flows(captures["clients"])
    assert {key[0] for key in flows} == {"tcp", "udp"} and len(flows) >= 6
    to_servers = defaultdict(list)
    for frame in captures["to-servers"]:
        if IP in frame and l4(frame) is not None:
            to_servers[("tcp" if TCP in frame else "udp", frame[IP].src,
                        l4(frame).sport)].append(frame)
    replies = 0
    for key, sent in flows.items():
        proto, client_ip, client_port = key
        vip, vport = sent[0][IP].dst, l4(sent[0]).dport
        service = table[(proto, vip, vport)]
        backends = {(str(b.ip), b.port) for b in service.backends}
        out = to_servers[key]
        assert len(out) == len(sent), key
        backend = (out[0][IP].dst, l4(out[0]).dport)
        assert backend in backends, (key, backend)
        for before, after in zip(sent, out):
            assert (after[IP].src, l4(after).sport) == (client_ip, client_port)
            assert (after[IP].dst, l4(after).dport) == backend     # one backend per flow
            assert bytes(l4(after).payload) == bytes(l4(before).payload)
            assert after[Ether].src == before[Ether].src and after[Ether].dst == before[Ether].dst
            assert_checksums_valid(bytes(after))
        # the servers' replies to this flow, and what left towards the client
        from_backend = [f for f in captures["servers"] if IP in f and l4(f) is not None
                        and (f[IP].dst, l4(f).dport) == (client_ip, client_port)]
        assert from_backend, f"servers.pcap has no reply to {key}"
        assert all((f[IP].src, l4(f).sport) == backend for f in from_backend)
        back = [f for f in captures["to-clients"] if IP in f and l4(f) is not None
                and (f[IP].dst, l4(f).dport) == (client_ip, client_port)]
        assert len(back) == len(from_backend)
        for before, after in zip(from_backend, back):
            assert (after[IP].src, l4(after).sport) == (vip, vport)     # from vip:port
            assert bytes(l4(after).payload) == bytes(l4(before).payload)
            assert_checksums_valid(bytes(after))
        replies += len(from_backend)
    # Every reply found the flow rplb made; none was rewritten statelessly.
    events = stats["events"]
    assert events["to_client_by_flow"] == replies > 0
    assert events["to_client_stateless"] == 0 and events["reply_unmatched"] == 0
    assert events["flows_created"] == len(flows)
    assert not any(stats["drops"].values()), stats["drops"]


def test_pings_to_a_vip_are_answered_and_other_traffic_passes_unchanged(example):
    _, captures, stats, _ = example
    vips = {vip for _, vip, _ in services()}
    pings = [f for f in captures["clients"] if ICMP in f and f[ICMP].type == 8]
    assert {f[IP].dst for f in pings} == vips
    answers = [f for f in captures["to-clients"] if ICMP in f and f[ICMP].type == 0]
    assert sorted((f[IP].src, f[IP].dst) for f in answers) == sorted(
        (f[IP].dst, f[IP].src) for f in pings)
    for answer in answers:
        assert_checksums_valid(bytes(answer))
    assert stats["events"]["icmp_echo_replied"] == len(pings)
    flows = client_flows(captures["clients"])
    handled = {bytes(f) for frames in flows.values() for f in frames} | {bytes(f) for f in pings}
    passing = [bytes(f) for f in captures["clients"] if bytes(f) not in handled]
    assert len(passing) >= 3                       # ARP, IPv6, IPv4 to no VIP
    out = [bytes(f) for f in captures["to-servers"]]
    assert all(frame in out for frame in passing)
    assert stats["events"]["passed_through"] >= len(passing)


def test_the_clients_fit_one_burst_so_replies_come_after_them(example):
    # The design show.py explains: the worker reads port 0 before port 1 in
    # every turn, so a clients.pcap no larger than one burst is processed
    # before the first reply.  A larger one would break the example.
    from rplb import contract
    _, captures, _, _ = example
    assert len(captures["clients"]) <= contract.BURST


def test_the_output_pairs_both_directions_and_explains_itself(example):
    proc, _, _, _ = example
    out = proc.stdout
    assert "destination rewritten; checksums ok" in out
    assert "source rewritten; checksums ok" in out
    assert "CHECKSUM WRONG" not in out and "NOT FOUND" not in out
    assert "the replies found their flows" in out
    assert "order: frames left towards the servers in another order than they came" in out
    # one flow's block: the client's frame, what reached the server, the
    # server's reply and what reached the client, in that order
    block = out.split("TCP 203.0.113.10:40000 -> web 10.0.0.100:80")[1].split("\n\n")[0]
    labels = [line.split()[0] + " " + line.split()[2] for line in block.splitlines()[1:]]
    assert labels[:2] == ["client port", "rplb server"]
    assert "server port" in labels and labels[-1] == "rplb client"
    # rates: none (a replay of a few frames has none worth quoting)
    assert "pps" not in out.lower().replace("no rates", "")
