"""Statistics as operators read them: testpmd's per-port block (so tools
that parse testpmd output parse ours), then rplb's own counters."""

from __future__ import annotations

from typing import Optional


def _port_block(port: dict, previous: Optional[dict], interval: float) -> str:
    """testpmd's block for one port.  Rates only between two snapshots (a
    stats period): a single snapshot (the final block, rplbctl stats) has
    none, and printing 0 there would read as "idle"."""
    e = port.get("ethdev", {})
    title = f" NIC statistics for port {port['port_id']} "
    lines = [
        f"  {title:#^76}",
        f"  RX-packets: {e.get('ipackets', 0):<10} RX-missed: {e.get('imissed', 0):<10} "
        f"RX-bytes:  {e.get('ibytes', 0)}",
        f"  RX-errors: {e.get('ierrors', 0)}",
        f"  RX-nombuf:  {e.get('rx_nombuf', 0):<10}",
        f"  TX-packets: {e.get('opackets', 0):<10} TX-errors: {e.get('oerrors', 0):<10} "
        f"TX-bytes:  {e.get('obytes', 0)}",
    ]
    if previous is not None and interval > 0 and "ethdev" in previous and e:
        p = previous["ethdev"]
        rx_pps = int((e["ipackets"] - p["ipackets"]) / interval)
        tx_pps = int((e["opackets"] - p["opackets"]) / interval)
        rx_bps = int((e["ibytes"] - p["ibytes"]) * 8 / interval)
        tx_bps = int((e["obytes"] - p["obytes"]) * 8 / interval)
        lines += [
            "",
            "  Throughput (since last show)",
            f"  Rx-pps: {rx_pps:>12}          Rx-bps: {rx_bps:>12}",
            f"  Tx-pps: {tx_pps:>12}          Tx-bps: {tx_bps:>12}",
        ]
    lines.append("  " + "#" * 76)
    return "\n".join(lines)


def format_ports(snapshot: dict, previous: Optional[dict] = None, interval: float = 0.0) -> str:
    prev_ports = previous["ports"] if previous else [None] * len(snapshot["ports"])
    return "\n".join(_port_block(p, q, interval) for p, q in zip(snapshot["ports"], prev_ports))


def format_worker(worker: dict) -> str:
    """One worker's line: its lcore and queue, what it received and sent on
    each side, what it handed to the others and took from them, its drops
    and its flows."""
    frontend, backend = worker["port"]
    events, drops = worker["events"], worker["drops"]
    text = (f"lcore {worker['lcore']} (queue {worker['queue']}): "
            f"frontend rx {frontend['rx_packets']} tx {frontend['tx_packets']}, "
            f"backend rx {backend['rx_packets']} tx {backend['tx_packets']}, "
            f"handed over {events.get('handoff_sent', 0)} taken {events.get('handoff_received', 0)}, "
            f"drops {sum(drops.values())}")
    if "flows" in worker:
        text += f", flows {worker['flows']}"
    return text


def format_rplb(snapshot: dict) -> str:
    """rplb's own counters: per side, drops by reason, events, services."""
    lines = [f"  rplb ({snapshot['engine']} engine, up {snapshot['uptime_s']:.1f} s)"]
    for port, counters in zip(snapshot["ports"], snapshot["port"]):
        lines.append(f"  {port['role']:<8} port {port['port_id']} ({port['name']}): "
                     f"rx {counters['rx_packets']} tx {counters['tx_packets']} "
                     f"tx-dropped {counters['tx_dropped']}")
    lines.append("  drops: " + " ".join(f"{k}={v}" for k, v in snapshot["drops"].items()))
    lines.append("  events: " + " ".join(f"{k}={v}" for k, v in snapshot["events"].items()))
    workers = snapshot.get("workers", [])
    if len(workers) > 1:
        lines.append(f"  {len(workers)} workers, steering in {snapshot.get('steering', 'none')}:")
        for worker in workers:
            lines.append("    " + format_worker(worker))
    for svc in snapshot.get("services", []):
        lines.append(f"  service {svc['service']} [{svc['key']}]: packets={svc['packets']} "
                     f"bytes={svc['bytes']} new_flows={svc['new_flows']} "
                     f"active_flows={svc['active_flows']}")
        for b in svc["backends"]:
            lines.append(f"    backend {b['backend']} weight={b['weight']}: "
                         f"packets={b['packets']} bytes={b['bytes']} "
                         f"new_flows={b['new_flows']} active_flows={b['active_flows']}")
    if "mbufs" in snapshot:
        lines.append(f"  mbufs: {snapshot['mbufs']['in_use']} in use of {snapshot['mbufs']['size']}")
    return "\n".join(lines)
