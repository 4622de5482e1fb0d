"""How many workers rplb runs (one per EAL lcore but the main one, read from
EAL's options without starting it), what their rings and mbufs need, and
which steering each port runs in: the pure parts of issue 18, no DPDK."""

import os

import pytest

from rplb import lcores, sizing, steering


@pytest.mark.parametrize("args,want", [
    (["-l", "0-1"], {0, 1}),
    (["-l", "0-3,6"], {0, 1, 2, 3, 6}),
    (["-l0-2"], {0, 1, 2}),
    (["--lcores", "0@0,1@0,2@1"], {0, 1, 2}),
    (["--lcores=0@0,1@0,2@1"], {0, 1, 2}),
    (["--lcores", "(0-2)@1,3@0"], {0, 1, 2, 3}),
    (["--lcores", "0@(0,1),1@0,2@1"], {0, 1, 2}),
    (["--lcores", "0-3"], {0, 1, 2, 3}),
    (["-c", "0x5"], {0, 2}),
    (["-c", "f"], {0, 1, 2, 3}),
    # the last lcore option wins, as in EAL; others are not lcores
    (["-l", "0-1", "--no-huge", "-m", "512", "--lcores", "0@0,1@1,2@1"], {0, 1, 2}),
    (["--log-level=*:warning", "-l", "4-5"], {4, 5}),
])
def test_lcores_of_eal_options(args, want):
    assert lcores.eal_lcores(args) == want
    assert lcores.worker_count(args) == len(want) - 1


def test_without_an_lcore_option_every_cpu_of_the_process():
    assert lcores.eal_lcores(["--no-huge"]) == set(os.sched_getaffinity(0))


@pytest.mark.parametrize("args,message", [
    (["-l", "0-x"], "-l '0-x': '0-x' is not a number or a range a-b"),
    (["-l", "3-1"], "-l '3-1': the range '3-1' runs backwards"),
    (["--lcores", "0@0,,1@1"], "--lcores '0@0,,1@1': an empty entry"),
    (["-c", "0xzz"], "-c '0xzz' is not a hexadecimal mask"),
])
def test_lcore_lists_eal_would_refuse_are_named(args, message):
    with pytest.raises(lcores.LcoreError) as err:
        lcores.eal_lcores(args)
    assert str(err.value) == message


# ---- mbufs: the handoff rings -------------------------------------------------

def test_the_pool_covers_the_handoff_rings_and_one_more_burst_per_worker():
    base = dict(ports=2, queues_per_port=2, workers=2, rx_descriptors=1024,
                tx_descriptors=1024, burst=64)
    without = sizing.mbufs_needed(16383, **base)
    ring = 4096
    steered = sizing.mbufs_needed(16383, **base, handoff_ring_size=ring)
    # two rings (one per ordered pair), each holding ring - 1 frames, and a
    # burst taken from them per worker
    assert steered.total == without.total + 2 * (ring - 1) + 2 * 64
    assert "2 handoff rings x 4095 + 2 workers x (4 bursts of 64" in steered.explain()
    # one worker never steers: no ring, whatever the size given
    one = sizing.mbufs_needed(16383, **dict(base, queues_per_port=1, workers=1),
                              handoff_ring_size=ring)
    assert one.handoff == 0 and one.bursts_per_worker == 3


def test_the_rings_into_one_worker_hold_about_4096_frames_whatever_the_workers():
    from rplb import dataplane
    assert dataplane.handoff_ring_size(1) == 0
    for workers in (2, 3, 4, 5, 8, 16, 33, 64, 65, 128):
        size = dataplane.handoff_ring_size(workers)
        assert size & (size - 1) == 0 and size >= 64
        # at most 4,096 frames into one worker, at least half of that
        # while the floor of 64 entries does not bind
        into_one = (workers - 1) * size
        assert into_one <= 4096 or size == 64
        assert into_one > 2048 or size == 64


def test_the_default_pool_grows_with_the_workers():
    def need_for(workers):
        return lambda n: sizing.mbufs_needed(n, ports=2, queues_per_port=workers,
                                             workers=workers, rx_descriptors=1024,
                                             tx_descriptors=1024, burst=64,
                                             handoff_ring_size=1024)
    assert sizing.default_mbufs(need_for(1)) == 16383
    eight = sizing.default_mbufs(need_for(8))
    assert eight > 16383 and (eight + 1) & eight == 0        # 2^k - 1
    assert need_for(8)(eight).total <= eight < 2 * need_for(8)(eight).total


# ---- which steering ---------------------------------------------------------------

PORTS = [(0, "mlx5_0", "frontend", 512), (1, "mlx5_1", "backend", 512)]


def test_both_ports_take_the_rule_hardware():
    decision = steering.decide(PORTS, {})
    assert decision.hardware and decision.reta_size == 512
    assert decision.log_lines(4) == [
        "steering to 4 workers: port 0 (mlx5_0, frontend): hardware (rte_flow RSS by the "
        "client's source address; only ICMP errors are steered in software)",
        "steering to 4 workers: port 1 (mlx5_1, backend): hardware (rte_flow RSS by the "
        "client's destination address; only ICMP errors are steered in software)"]


def test_a_refusal_puts_both_ports_in_software():
    decision = steering.decide(PORTS, {0: "Function not implemented"})
    assert not decision.hardware
    assert decision.log_lines(2) == [
        "steering to 2 workers: port 0 (mlx5_0, frontend): software (the port refused "
        "rte_flow RSS by the client's source address: Function not implemented)",
        "steering to 2 workers: port 1 (mlx5_1, backend): software (port 0 cannot steer in "
        "hardware, and both ports must)"]
    decision = steering.decide(PORTS, {1: "unsupported RSS types"})
    assert not decision.hardware
    assert decision.log_lines(2)[0].endswith(
        "port 0 (mlx5_0, frontend): software (port 1 cannot steer in hardware, and both "
        "ports must)")
    assert decision.log_lines(2)[1].endswith(
        "software (the port refused rte_flow RSS by the client's destination address: "
        "unsupported RSS types)")


@pytest.mark.parametrize("sizes,problem", [
    ((512, 128), "their RSS indirection tables differ (128, 512 entries)"),
    ((0, 0), "its RSS indirection table of 0 entries is not a power of two up to 512"),
    ((384, 384), "its RSS indirection table of 384 entries is not a power of two"),
    ((1024, 1024), "its RSS indirection table of 1024 entries is not a power of two up to 512"),
])
def test_indirection_tables_the_workers_cannot_model_mean_software(sizes, problem):
    ports = [(0, "a", "frontend", sizes[0]), (1, "b", "backend", sizes[1])]
    decision = steering.decide(ports, {})
    assert not decision.hardware
    for line in decision.log_lines(2):
        assert ": software (" in line and problem in line, line


def test_the_rss_key_is_what_nics_take():
    assert len(steering.RSS_KEY) == 40
