"""The shipped example (examples/): its round trip, checked independently of
show.py.  Every client flow's frames reach a backend of its service with
only the destination rewritten; every reply comes back to its client from
vip:port, found through the flow rplb made (to_client_by_flow); checksums
recomputed with scapy.  IPv4 and IPv6 (the web6 service) alike.  run.py runs here as run.sh runs it, minus the
bootstrap (the suite already runs from the installed rplb)."""

import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

from lbcheck import assert_checksums_valid, assert_checksums_valid6

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


def ip(frame):
    """The frame's IPv4 or IPv6 header, else None."""
    return frame[IP] if IP in frame else frame[IPv6] if IPv6 in frame else None


def checksums_valid(frame):
    (assert_checksums_valid6 if IPv6 in frame else assert_checksums_valid)(bytes(frame))


def client_flows(frames):
    """{(proto, client ip, client port): [frames]} of the frames to a service."""
    table = services()
    flows = defaultdict(list)
    for frame in frames:
        if ip(frame) is not None and l4(frame) is not None:
            proto = "tcp" if TCP in frame else "udp"
            if (proto, ip(frame).dst, l4(frame).dport) in table:
                flows[(proto, ip(frame).src, l4(frame).sport)].append(frame)
    return flows


def test_every_client_flow_reaches_a_backend_and_its_replies_come_back_from_the_vip(example):
    _, captures, stats, _ = example
    table = services()
    flows = client_flows(captures["clients"])
    assert {key[0] for key in flows} == {"tcp", "udp"} and len(flows) >= 6
    assert any(":" in key[1] for key in flows)                    # IPv6 among them
    to_servers = defaultdict(list)
    for frame in captures["to-servers"]:
        if ip(frame) is not None and l4(frame) is not None:
            to_servers[("tcp" if TCP in frame else "udp", ip(frame).src,
                        l4(frame).sport)].append(frame)
    replies = 0
    for key, sent in flows.items():
        proto, client_ip, client_port = key
        vip, vport = ip(sent[0]).dst, l4(sent[0]).dport
        service = table[(proto, vip, vport)]
        backends = {(str(b.ip), b.port) for b in service.backends}
        out = to_servers[key]
        assert len(out) == len(sent), key
        backend = (ip(out[0]).dst, l4(out[0]).dport)
        assert backend in backends, (key, backend)
        for before, after in zip(sent, out):
            assert (ip(after).src, l4(after).sport) == (client_ip, client_port)
            assert (ip(after).dst, l4(after).dport) == backend     # one backend per flow
            assert bytes(l4(after).payload) == bytes(l4(before).payload)
            assert after[Ether].src == before[Ether].src and after[Ether].dst == before[Ether].dst
            checksums_valid(after)
        # the servers' replies to this flow, and what left towards the client
        from_backend = [f for f in captures["servers"] if ip(f) is not None and l4(f) is not None
                        and (ip(f).dst, l4(f).dport) == (client_ip, client_port)]
        assert from_backend, f"servers.pcap has no reply to {key}"
        assert all((ip(f).src, l4(f).sport) == backend for f in from_backend)
        back = [f for f in captures["to-clients"] if ip(f) is not None and l4(f) is not None
                and (ip(f).dst, l4(f).dport) == (client_ip, client_port)]
        assert len(back) == len(from_backend)
        for before, after in zip(from_backend, back):
            assert (ip(after).src, l4(after).sport) == (vip, vport)     # from vip:port
            assert bytes(l4(after).payload) == bytes(l4(before).payload)
            checksums_valid(after)
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
    pings = [f for f in captures["clients"]
             if ICMP in f and f[ICMP].type == 8 or ICMPv6EchoRequest in f]
    assert {ip(f).dst for f in pings} == vips                     # fd00::100 among them
    answers = [f for f in captures["to-clients"]
               if ICMP in f and f[ICMP].type == 0 or ICMPv6EchoReply in f]
    assert sorted((ip(f).src, ip(f).dst) for f in answers) == sorted(
        (ip(f).dst, ip(f).src) for f in pings)
    for answer in answers:
        checksums_valid(answer)
    for request, answer in zip(sorted(pings, key=lambda f: ip(f).dst),
                               sorted(answers, key=lambda f: ip(f).src)):
        echo = ICMPv6EchoRequest if IPv6 in request else ICMP
        reply = ICMPv6EchoReply if IPv6 in answer else ICMP
        # the same identifier, sequence number and data: all after type, code, checksum
        assert bytes(answer[reply])[4:] == bytes(request[echo])[4:]
    assert stats["events"]["icmp_echo_replied"] == len(pings)
    flows = client_flows(captures["clients"])
    handled = {bytes(f) for frames in flows.values() for f in frames} | {bytes(f) for f in pings}
    passing = [bytes(f) for f in captures["clients"] if bytes(f) not in handled]
    assert len(passing) >= 4                       # ARP, neighbour solicitation, IPv6 and
    assert any(IPv6 in f and f[IPv6].nh == 58 for f in map(Ether, passing))   # IPv4 to no VIP
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
    # IPv6 addresses with a port in brackets, as rplb writes them
    assert "TCP [2001:db8:c::a]:41000 -> web6 [fd00::100]:80 -> backend [fd00:1::1" in out
    assert "fd00::100 > 2001:db8:c::99 echo reply; checksums ok" in out
    # rates: none (a replay of a few frames has none worth quoting)
    assert "pps" not in out.lower().replace("no rates", "")
