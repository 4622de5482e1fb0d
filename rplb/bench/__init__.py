"""rplb-bench: measure rplb next to DPDK's reference forwarder, rerunnably.

    rplb-bench                      the full run (several minutes)
    rplb-bench --quick --json       the smallest run (what CI runs)
    rplb-bench --ipv6-only          IPv6 next to IPv4, 1,000 flows both ways
    python -m rplb.bench --help

Throughput.  For each traffic case a capture of 64-byte TCP frames is
written (one frame per client 5-tuple, all to the VIP 10.0.0.100:80): 1,
1,000, 65,536 and 1,000,000 established flows (ACKs), and an all-new-flows
capture (every frame the SYN of a different client 5-tuple).  Three programs
forward it, each on the same virtual ports, lcores, mbuf count and burst size:

    port 0  net_pcap0,rx_pcap=CAPTURE,infinite_rx=1   the source (frontend)
    port 1  net_null0,no-rx=1                          the sink (backend)

    dpdk-testpmd --forward-mode=io       moves mbufs, reads nothing
    dpdk-testpmd --forward-mode=5tswap   swaps MACs, IPs and ports: a rewrite
    rplb-dpdk --config SERVICES          the load balancer (one TCP service,
                                         16 backends)

with EAL `--no-huge -m M --no-pci -l 0-1` (lcore 0: main, lcore 1: the one
forwarding lcore), testpmd `--total-num-mbufs=N` and rplb `--mbufs N` with the
same N (the pcap PMD keeps the whole capture in mbufs of that pool, so N is
the capture's frame count plus 16,384), and testpmd `--burst` set to rplb's
rx burst (RPLB_BURST, 64).  The programs run in turn, several
rounds (the order rotates every round), each until it has printed --seconds
measured samples; then SIGINT.

Samples: both programs print testpmd's port blocks every second
(`--stats-period 1`); a sample is port 1's `Tx-pps` (frames forwarded to the
sink per second over that period).  Warm-up: the first block is always
dropped (its period contains the start), and so is every block whose period
began before port 0 had received one full pass of the capture (the
cumulative `RX-packets` of port 0 in the previous block is below the
capture's frame count).  The capture replays the same flows, so after the
first pass every flow is in rplb's flow table: what is kept is the steady
state of established flows.  The figure of a run is the median of its
samples, the figure of a program the median of its runs.

IPv6 (issue 19, --ipv6, on by default; --ipv6-only for it alone): 1,000
established IPv6 TCP flows in both directions, 74-byte frames (Ethernet,
IPv6 and TCP headers, no options: the smallest IPv6 TCP frame), a service

    {name: web6, vip: "fd00::100", proto: tcp, port: 80,
     backends: [{ip: "fd00:1::10", port: 8080, weight: 1}]}

and the ports

    port 0  net_pcap0,rx_pcap=CLIENTS,infinite_rx=1   the clients' ACKs to the VIP
    port 1  net_pcap1,rx_pcap=REPLIES,infinite_rx=1   the backend's replies to them
    (what either port sends is dropped)

with the same programs, lcores, mbufs and burst as above; a sample is both
ports' Tx-pps together, after one full pass of both captures.  One backend,
so every reply comes from its flow's backend.  Its IPv4 twin (the same
with 64-byte IPv4 frames, 192.168.1.1:8080) runs next to it: rplb/5tswap
of the two side by side, under `ipv6_1000_flows` in --json, with the
engine's instructions per packet of established IPv6 flows over IPv4's
(callgrind, --only other; goal <= 1.3).

All-new flows cannot have a steady state with a replayed capture (on the
second pass every flow exists), so rplb's all-new figure is measured during
the first pass: a capture of --new-flows SYNs of distinct 5-tuples, a flow
table twice that size, rplb with `--stats-period 0.02`, and only the blocks
whose whole period lies inside the first pass are kept (every frame of those
periods created a flow; the `flows_created` counter is checked).  testpmd has
no flow state: its figures on that capture are its usual steady state.

The source bounds the 1M-flow target (rplb at 1M flows against rplb at
1,000): net_pcap replays a million frames from a million cold mbufs, and io
alone slows down with them.  Next to that target the report prints rplb's
own work (its time minus io's) at both counts, and what this source allows
rplb by that model (scaling_ceiling): the ratio it would reach were its own
work no dearer with a million flows than with 1,000.

Also measured: Maglev table build time (rplb.maglev.build_table, 65,537
slots), memory per stored flow (the DPDK heap a flow table takes, per flow),
time from process start to the first forwarded frame, and the engine alone
(rplb-bench-engine: process_burst called directly, ns/packet, and
instructions/packet counted by valgrind's callgrind).

And the control plane (--only control): a running rplb-dpdk with 10,000
services, its full reloads, single edits and readers, through the control
socket, DPDK telemetry and Prometheus.

The package, by job:

    traffic.py        the captures and the services file replayed
    peers.py          dpdk-testpmd and rplb-dpdk side by side: command lines,
                      statistics, the throughput cases, time to first frame
    engine.py         the parts alone: Maglev builds, rplb-bench-engine, callgrind
    control_plane.py  rplb-dpdk with 10,000 services: edits, reloads, readers
    report.py         the machine, the targets, the table
    cli.py            options and the run
    common.py         what they share (log, errors, process names)
"""

from rplb.bench.cli import main

__all__ = ["main"]
