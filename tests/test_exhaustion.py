"""Exhausted resources end in counted drops, never a crash or a leak."""

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from harness import run_rplb
from test_lb import client, service_named, write_config


def test_flow_table_full_ten_times_over(tmp_path):
    """10x the table's capacity of new flows: all forwarded (Maglev), the
    overflow counted; the stored ones keep working."""
    web = service_named("web")
    capacity = 64
    sent = [client(f"198.18.{i // 250}.{i % 250 + 1}", 1024 + i, web["vip"], 80)
            for i in range(10 * capacity)]
    config = write_config(tmp_path, flow_table_size=capacity)
    run = run_rplb(tmp_path, [bytes(p) for p in sent], [], rplb_args=["--config", str(config)])
    assert run.rc == 0, run.stderr
    assert len(run.backend_out) == len(sent)
    assert run.stats["events"]["flows_created"] == capacity
    assert run.stats["events"]["flow_table_full"] == 9 * capacity
    assert run.stats["mbufs_in_use_at_exit"] == 0


def test_tiny_mempool_drops_are_counted_and_nothing_leaks(tmp_path):
    """The smallest pool rplb-dpdk accepts with 64 descriptors per ring and
    no fragments held (a smaller one is refused: tests/test_cli.py,
    test_fragments.py): every frame is either
    forwarded or counted as received without an mbuf.  (With net_pcap,
    which frees on transmit, the pool rarely runs dry: this proves the
    accounting and the absence of leaks, not the rate of drops.)"""
    from rplb import contract, sizing

    def need(mbufs):
        return sizing.mbufs_needed(mbufs, ports=2, queues_per_port=1, workers=1,
                                   rx_descriptors=64, tx_descriptors=64,
                                   burst=contract.BURST).total
    smallest = next(n for n in range(1, 1 << 16) if need(n) <= n)
    web = service_named("web")
    sent = [bytes(client("198.18.9.9", 2000 + i % 100, web["vip"], 80, payload=b"z" * 1000))
            for i in range(5000)]
    config = write_config(tmp_path, fragments={"held": 0})
    run = run_rplb(tmp_path, sent, sent[:500], duration=1.5,
                   rplb_args=["--config", str(config), "--mbufs", str(smallest),
                              "--descriptors", "64"])
    assert run.rc == 0, run.stderr
    assert run.stats["mbufs_in_use_at_exit"] == 0
    ethdev = run.stats["ports"][0]["ethdev"]
    # every frame is either forwarded or counted as a receive without mbuf
    assert len(run.backend_out) + ethdev["rx_nombuf"] + ethdev["imissed"] == len(sent)
    assert len(run.backend_out) > 0
    for frame in run.backend_out[:50]:
        assert Ether(frame)[IP].dst in {b["ip"] for b in web["backends"]}
        assert Ether(frame)[TCP].dport == 8080
