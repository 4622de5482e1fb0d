"""Live traffic through net_tap ports: configuration changes by SIGHUP while
the same flows keep sending, and the TX checksum offload path."""

import json

import pytest
import yaml
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from lbcheck import assert_checksums_valid, by_flow, expected_backend
from tapwire import TapWire, client_segments, from_test_clients

VIP = "10.0.0.100"
B1, B2, B3 = "192.168.1.10", "192.168.1.11", "192.168.1.12"


def config_text(backends):
    # Flows that only sent a SYN would expire after tcp_syn (10 s) on a slow
    # machine between the phases of a test: give them time.
    return yaml.safe_dump({"maglev_table_size": 65537, "flow_table_size": 4096,
                           "timeouts": {"tcp_syn": 300}, "services": [
        {"name": "web", "vip": VIP, "proto": "tcp", "port": 80,
         "backends": [{"ip": ip, "port": 8080, "weight": w} for ip, w in backends]},
        {"name": "dns", "vip": VIP, "proto": "udp", "port": 53,
         "backends": [{"ip": "192.168.2.20", "port": 5353}]}]})


def start(tmp_path, backends, args=()):
    """rplb on two tap ports with a services file of these (ip, weight)
    backends; returns the file (rewrite it and reload) and the wire."""
    path = tmp_path / "services.yaml"
    path.write_text(config_text(backends))
    return path, TapWire(tmp_path, ["--config", str(path), *args])


def test_sighup_changes_keep_every_existing_flow_on_its_backend(tmp_path):
    path, wire = start(tmp_path, [(B1, 1), (B2, 1)])
    try:
        old_flows = [(f"100.64.{i // 200}.{i % 200 + 1}", 10000 + i) for i in range(300)]
        first = by_flow([bytes(p) for p in wire.to_backends(
            client_segments(old_flows, "S"), from_test_clients)])
        assert len(first) == 300
        assert {next(iter(b)) for b in first.values()} == {(B1, 8080), (B2, 8080)}

        # A backend added, one re-weighted: no existing flow may move.
        path.write_text(config_text([(B1, 3), (B2, 1), (B3, 5)]))
        assert "reloaded" in wire.reload()
        new_flows = [(f"100.64.9.{i % 200 + 1}", 20000 + i) for i in range(300)]
        second = by_flow([bytes(p) for p in wire.to_backends(
            client_segments(old_flows, "A") + client_segments(new_flows, "S"), from_test_clients)])
        for flow in old_flows:
            assert second[flow] == first[flow], flow
        assert any(second[f] == {(B3, 8080)} for f in new_flows)   # the change took effect

        # A broken file changes nothing.
        path.write_text("services: [ {vip: 10.0.0.100, proto: tcp, port: 99999} ]")
        assert "keeps serving" in wire.reload()
        again = by_flow([bytes(p) for p in wire.to_backends(
            client_segments(old_flows, "A"), from_test_clients)])
        for flow in old_flows:
            assert again[flow] == first[flow]

        # A backend removed: its flows move, no packet reaches it, others stay.
        path.write_text(config_text([(B1, 3), (B3, 5)]))
        assert "reloaded" in wire.reload()
        third = by_flow([bytes(p) for p in wire.to_backends(
            client_segments(old_flows, "A"), from_test_clients)])
        assert len(third) == 300
        for flow in old_flows:
            if first[flow] == {(B1, 8080)}:
                assert third[flow] == first[flow]
            else:
                assert third[flow] in ({(B1, 8080)}, {(B3, 8080)})
    finally:
        rc, _ = wire.stop()
    assert rc == 0
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["mbufs_in_use_at_exit"] == 0
    moved = sum(1 for f in old_flows if first[f] == {(B2, 8080)})
    assert stats["events"]["flows_moved"] == moved
    assert stats["events"]["tables_seen"] >= 3


def test_a_reused_client_port_after_close_is_a_new_connection(tmp_path):
    """A SYN on the tuple of a closing flow is a new connection: it gets a
    fresh Maglev choice, so a drained backend gets none of them."""
    path, wire = start(tmp_path, [(B1, 1), (B2, 1)])
    try:
        flows = [(f"100.64.3.{i + 1}", 30000 + i) for i in range(100)]
        first = by_flow([bytes(p) for p in wire.to_backends(
            client_segments(flows, "S"), from_test_clients)])
        assert {next(iter(b)) for b in first.values()} == {(B1, 8080), (B2, 8080)}
        wire.to_backends(client_segments(flows, "FA"), from_test_clients)

        path.write_text(config_text([(B1, 1), (B2, 0)]))      # B2 drained
        assert "reloaded" in wire.reload()
        # A FIN-ACK of a closing flow still goes where its flow is ...
        late = by_flow([bytes(p) for p in wire.to_backends(
            client_segments(flows, "A"), from_test_clients)])
        assert late == first
        # ... but the same ports opening again are new connections.
        again = by_flow([bytes(p) for p in wire.to_backends(
            client_segments(flows, "S"), from_test_clients)])
    finally:
        rc, _ = wire.stop()
    assert rc == 0
    assert all(again[f] == {(B1, 8080)} for f in flows)
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["events"]["flows_created"] == 200
    assert stats["mbufs_in_use_at_exit"] == 0


def test_replies_of_a_removed_backend_follow_their_flow_until_it_moves(tmp_path):
    """A flow remembers its backend: replies from a backend removed from the
    configuration still go back as the VIP until the client's next packet
    moves the flow; after that they are nobody's and pass unchanged."""
    path, wire = start(tmp_path, [(B1, 1), (B2, 1)])
    try:
        flows = [(f"100.64.4.{i + 1}", 31000 + i) for i in range(60)]
        first = by_flow([bytes(p) for p in wire.to_backends(
            client_segments(flows, "S"), from_test_clients)])
        on_b2 = [f for f in flows if first[f] == {(B2, 8080)}]
        assert on_b2

        def replies():
            return [Ether() / IP(src=B2, dst=ip) / TCP(sport=8080, dport=port, flags="SA")
                    / Raw(b"r") for ip, port in on_b2]

        def to_test_clients(p):
            return IP in p and p[IP].dst.startswith("100.64.4.")

        path.write_text(config_text([(B1, 1)]))                # B2 removed
        assert "reloaded" in wire.reload()
        before_move = wire.to_clients(replies(), to_test_clients)
        moved = by_flow([bytes(p) for p in wire.to_backends(
            client_segments(on_b2, "A"), from_test_clients)])
        after_move = wire.to_clients(replies(), to_test_clients)
    finally:
        rc, _ = wire.stop()
    assert rc == 0
    assert sorted((p[IP].src, p[TCP].sport) for p in before_move) == [(VIP, 80)] * len(on_b2)
    assert all(moved[f] == {(B1, 8080)} for f in on_b2)
    assert sorted((p[IP].src, p[TCP].sport) for p in after_move) == [(B2, 8080)] * len(on_b2)
    for pkt in before_move + after_move:
        assert_checksums_valid(bytes(pkt))


@pytest.mark.parametrize("software", [False, True], ids=["offload", "software"])
def test_checksums_with_and_without_tx_offload(tmp_path, software):
    _, wire = start(tmp_path, [(B1, 1), (B2, 1)],
                    ["--software-checksums"] if software else [])
    try:
        offload_line = [l for l in wire.rplb.stderr_lines if "port 1" in l][0]
        assert ("offload on" in offload_line) != software, offload_line
        frames = client_segments([(f"100.64.0.{i + 1}", 3000 + i) for i in range(20)], "S")
        frames += [Ether() / IP(src=f"100.64.1.{i + 1}", dst=VIP) / UDP(sport=4000 + i, dport=53)
                   / Raw(b"query") for i in range(20)]
        out = wire.to_backends(frames, from_test_clients)
        replies = [Ether() / IP(src=B1, dst="100.64.0.1") / TCP(sport=8080, dport=3000 + i,
                                                              flags="SA") / Raw(b"r")
                   for i in range(10)]
        back = wire.to_clients(replies, lambda p: IP in p and p[IP].dst == "100.64.0.1")
    finally:
        rc, _ = wire.stop()
    assert rc == 0
    assert len(out) == 40 and len(back) == 10
    for pkt in out:
        assert pkt[IP].dst in (B1, B2, "192.168.2.20")
        assert_checksums_valid(bytes(pkt))
    for pkt in back:
        assert pkt[IP].src == VIP and pkt[TCP].sport == 80
        assert_checksums_valid(bytes(pkt))


def test_bad_checksums_flagged_by_the_nic_are_dropped_and_counted(tmp_path):
    """net_tap verifies RX checksums (an RX offload): frames it flags bad are
    dropped before a TX offload could silently repair them."""
    _, wire = start(tmp_path, [(B1, 1)])
    try:
        good = client_segments([("100.64.0.1", 5000)], "S")
        bad = client_segments([("100.64.0.2", 5001)], "S")
        bad[0][TCP].chksum = 0x1234
        bad_ip = client_segments([("100.64.0.3", 5002)], "S")
        bad_ip[0][IP].chksum = 0x4321
        out = wire.to_backends(good + bad + bad_ip, from_test_clients)
    finally:
        rc, _ = wire.stop()
    assert rc == 0
    assert [p[IP].src for p in out] == ["100.64.0.1"]
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["drops"]["bad_checksum"] == 2


def test_icmp_errors_follow_the_flow_not_the_current_maglev_choice(tmp_path):
    """A "fragmentation needed" about a flow's reply goes to the flow's
    backend, even after a reload changed the Maglev choice for its tuple
    (the backend drained, so the flow stays); an error about a tuple
    without a flow goes to the current Maglev choice."""
    path, wire = start(tmp_path, [(B1, 1), (B2, 1)])
    try:
        flows = [(f"100.64.5.{i + 1}", 32000 + i) for i in range(40)]
        first = by_flow([bytes(p) for p in wire.to_backends(
            client_segments(flows, "S"), from_test_clients)])
        on_b2 = [f for f in flows if first[f] == {(B2, 8080)}]
        assert on_b2
        path.write_text(config_text([(B1, 1), (B2, 0)]))      # Maglev: B1 only
        assert "reloaded" in wire.reload()

        def error_about(ip, port):
            quote = bytes(IP(src=VIP, dst=ip) / TCP(sport=80, dport=port, flags="A")
                          / Raw(b"x" * 100))
            return Ether(src="02:00:00:00:00:c1", dst="02:00:00:00:00:1b") \
                / IP(src="198.51.100.1", dst=VIP) / ICMP(type=3, code=4, nexthopmtu=1280) \
                / Raw(quote[:48])
        without_flow = [(f"100.64.6.{i + 1}", 33000 + i) for i in range(5)]
        errors = wire.to_backends([error_about(*f) for f in on_b2 + without_flow],
                                  lambda p: ICMP in p)
    finally:
        rc, _ = wire.stop()
    assert rc == 0
    assert len(errors) == len(on_b2) + len(without_flow)
    for pkt in errors:
        quoted = IP(bytes(pkt[ICMP].payload))
        client = (quoted.dst, quoted[TCP].dport)
        want = B2 if client in on_b2 else B1
        assert pkt[IP].dst == want and (quoted.src, quoted[TCP].sport) == (want, 8080)
        assert_checksums_valid(bytes(pkt))
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["events"]["icmp_errors_to_backend"] == len(on_b2)
    assert stats["events"]["icmp_errors_to_backend_stateless"] == len(without_flow)


def test_a_flow_moving_onto_a_taken_backend_tuple_takes_it_over(tmp_path):
    """Two flows of one client port, to two VIPs: X on backend B1 through
    VIP .100, Y on B2 through VIP .101.  B2 is removed from .101's service,
    whose remaining backend is B1: Y's next packet moves it to B1, onto the
    backend-side tuple X holds.  Y takes it over (X ends, counted), so B1's
    replies on that tuple leave from .101."""
    path = tmp_path / "services.yaml"

    def text(second_backends):
        return yaml.safe_dump({"maglev_table_size": 251, "services": [
            {"vip": VIP, "proto": "tcp", "port": 80,
             "backends": [{"ip": B1, "port": 8080}]},
            {"vip": "10.0.0.101", "proto": "tcp", "port": 80,
             "backends": [{"ip": ip, "port": 8080} for ip in second_backends]}]})
    path.write_text(text([B1, B2]))
    # A client port whose flow to .101 lands on B2.
    service = {"vip": "10.0.0.101", "proto": "tcp", "port": 80,
               "backends": [{"ip": B1, "port": 8080}, {"ip": B2, "port": 8080}]}
    port = next(p for p in range(34000, 35000)
                if expected_backend(service, "100.64.7.1", p, 251) == (B2, 8080))
    wire = TapWire(tmp_path, ["--config", str(path)])
    try:
        to_x = client_segments([("100.64.7.1", port)], "S")
        to_y = client_segments([("100.64.7.1", port)], "S", vip="10.0.0.101")
        first = [(p[IP].dst, p[IP].src) for p in wire.to_backends(to_x + to_y,
                                                                    from_test_clients)]
        assert sorted(first) == sorted([(B1, "100.64.7.1"), (B2, "100.64.7.1")])
        path.write_text(text([B1]))
        assert "reloaded" in wire.reload()
        moved = wire.to_backends(client_segments([("100.64.7.1", port)], "A",
                                                 vip="10.0.0.101"), from_test_clients)
        reply = Ether() / IP(src=B1, dst="100.64.7.1") / TCP(sport=8080, dport=port,
                                                            flags="A") / Raw(b"r")
        back = wire.to_clients([reply], lambda p: IP in p and p[IP].dst == "100.64.7.1")
    finally:
        rc, _ = wire.stop()
    assert rc == 0
    assert [p[IP].dst for p in moved] == [B1]
    assert [(p[IP].src, p[TCP].sport) for p in back] == [("10.0.0.101", 80)]
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["events"]["flows_moved"] == 1 and stats["events"]["flows_superseded"] == 1
