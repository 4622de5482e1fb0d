"""Drive the engine with IPv6 (and IPv4) services built as spec rows, in a
process of its own (EAL starts once per process): the services file and
rplb/tables.py take IPv6 in another branch (issue 19's control plane), so
the engine's tests build the contract's rows here.

    python v6driver.py SPEC.json OUT.json

SPEC: {"workers": n, "flow_table_size": n, "maglev_size": m, "strict": bool,
       "fragments": {"datagrams", "held", "timeout"}?, "linger_s": s?,
       "dir": path, "services": [...], "phases": [{"frontend": [[hex frames of
       queue 0], [queue 1], ...], "backend": [...], "services": [...]?}]}
A service: {"family", "vip", "proto", "port", "service_id", "backends":
[{"ip", "port", "weight", "slot", "generation"?}]}.

Each phase feeds its frames through net_pcap (rx_pcap per queue, read again
when the port restarts), runs the workers until the ports received them all
and the tx buffers drained (and linger_s more, for timeouts), stops them, and reads what left each queue.  A
phase with "services" publishes them first (with the workers stopped: the
flow tables stay).  OUT: per phase the frames out, the summed worker
counters, the backend and service counters, the flow samples, and the mbufs
still out of the pool at the end.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import maglev_reference  # noqa: E402
from harness import file_prefix, eal_args, remove_runtime_dir, read_pcap, write_pcap  # noqa: E402

TIMEOUTS = {"udp": 30, "tcp_syn": 10, "tcp": 300, "tcp_fin": 10}


def address_int(text: str) -> int:
    return int(ipaddress.ip_address(text))


def spec_rows(services, maglev_size, dataplane, contract):
    service_dtype = contract.DTYPES["rplb_service_spec"]
    backend_dtype = contract.DTYPES["rplb_backend_spec"]
    rows = np.zeros(len(services), dtype=service_dtype)
    backend_rows = []
    maglevs = []
    for i, service in enumerate(services):
        row = rows[i]
        row["family"] = service["family"]
        row["proto"] = socket.IPPROTO_TCP if service["proto"] == "tcp" else socket.IPPROTO_UDP
        row["port"] = socket.htons(service["port"])
        row["service_id"] = service["service_id"]
        if service["family"] == 6:
            row["vip6"] = np.frombuffer(ipaddress.IPv6Address(service["vip"]).packed, np.uint8)
        else:
            row["vip"] = int.from_bytes(ipaddress.IPv4Address(service["vip"]).packed, "little")
        ids = []
        for backend in service["backends"]:
            b = np.zeros(1, dtype=backend_dtype)[0]
            if service["family"] == 6:
                b["ip6"] = np.frombuffer(ipaddress.IPv6Address(backend["ip"]).packed, np.uint8)
            else:
                b["ip"] = int.from_bytes(ipaddress.IPv4Address(backend["ip"]).packed, "little")
            b["port"] = socket.htons(backend["port"])
            b["weight"] = backend.get("weight", 1)
            b["backend_id"] = dataplane.backend_id(backend["slot"], backend.get("generation", 1))
            b["service_id"] = service["service_id"]
            backend_rows.append(b)
            ids.append(int(b["backend_id"]))
        owners = maglev_reference.build_table(
            [address_int(b["ip"]) for b in service["backends"]],
            [b["port"] for b in service["backends"]],
            [b.get("weight", 1) for b in service["backends"]], maglev_size,
            family=service["family"])
        if all(o < 0 for o in owners):
            maglevs.append(None)
        else:
            maglevs.append(dataplane.MaglevTable(np.array(owners, dtype=np.int32),
                                                 np.array(ids, dtype=np.uint32)))
    backends = np.array(backend_rows, dtype=backend_dtype) if backend_rows else \
        np.zeros(0, dtype=backend_dtype)
    return rows, backends, maglevs


def main(spec_path: str, out_path: str) -> int:
    from rplb import contract, dataplane

    spec = json.loads(Path(spec_path).read_text())
    workers = spec.get("workers", 1)
    work = Path(spec["dir"])
    prefix = file_prefix()
    vdevs = []
    for port in (0, 1):
        args = []
        for q in range(workers):
            rx = write_pcap(work / f"rx{port}{q}.pcap", [])
            args += [f"rx_pcap={rx}", f"tx_pcap={work / f'tx{port}{q}.pcap'}"]
        vdevs.append(f"net_pcap{port}," + ",".join(args))
    lcores = "0-1" if workers == 1 else "0@0,1@0,2@1"
    dataplane.eal_init(["v6driver", *eal_args(prefix, vdevs, lcores)])
    result = {"phases": []}
    try:
        pool = dataplane.Mempool("v6pool", 8191, 256)
        ports = [dataplane.Port(0), dataplane.Port(1)]
        for port in ports:
            port.configure(pool, 512, 512, queues=workers)
        fragments = None
        if "fragments" in spec:
            from rplb.config import Fragments
            fragments = Fragments(**spec["fragments"])
        lb = dataplane.LoadBalancer(spec.get("flow_table_size", 4096), TIMEOUTS,
                                    max_workers=workers, fragments=fragments)
        handoff = dataplane.Handoff(workers) if workers > 1 else None
        lcore_ids = dataplane.worker_lcores()[:workers]
        engine_workers = [dataplane.Worker(lcore, ports[0], ports[1], lb=lb, queue=i,
                                           handoff=handoff, handoff_index=i)
                          for i, lcore in enumerate(lcore_ids)]
        maglev_size = spec.get("maglev_size", 251)
        services = spec["services"]
        held = []

        def publish(services):
            rows, backends, maglevs = spec_rows(services, maglev_size, dataplane, contract)
            held.append(maglevs)
            lb.publish(rows, backends, maglevs, TIMEOUTS, strict=spec.get("strict", False))

        publish(services)
        for number, phase in enumerate(spec["phases"]):
            if "services" in phase:
                services = phase["services"]
                publish(services)
            expected = [0, 0]
            for port in (0, 1):
                queues = phase["frontend" if port == 0 else "backend"]
                for q in range(workers):
                    frames = [bytes.fromhex(f) for f in (queues[q] if q < len(queues) else [])]
                    write_pcap(work / f"rx{port}{q}.pcap", frames)
                    expected[port] += len(frames)
            before = [p.stats()["ipackets"] for p in ports]
            for port in ports:
                port.start()
            for worker in engine_workers:
                worker.launch()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                got = [p.stats()["ipackets"] for p in ports]
                if all(g >= e for g, e in zip(got, expected)):
                    break
                time.sleep(0.01)
            # The tx buffers drain after drain_us (100 us) and handed-over
            # frames are taken on the next loop: let every worker loop a
            # while after the last frame came in.
            time.sleep(0.2 + phase.get("linger_s", 0))
            samples = lb.flow_sample(256)
            for worker in engine_workers:
                worker.request_stop()
            for worker in engine_workers:
                worker.stop()
            for port in ports:
                port.stop()
            counters = {"drops": {}, "events": {}}
            for worker in engine_workers:
                c = worker.counters()
                for group in ("drops", "events"):
                    for name, value in c[group].items():
                        counters[group][name] = counters[group].get(name, 0) + int(value)
            slots = sorted({b["slot"] for s in services for b in s["backends"]})
            backend_counters = lb.backend_counters(slots=slots)
            service_ids = sorted({s["service_id"] for s in services})
            service_counters = lb.service_counters(slots=service_ids)
            per_worker_flows = [lb.worker_flows(i) for i in range(len(engine_workers))]
            result["phases"].append({
                "frontend_out": [[f.hex() for f in read_pcap(work / f"tx0{q}.pcap")]
                                 for q in range(workers)],
                "backend_out": [[f.hex() for f in read_pcap(work / f"tx1{q}.pcap")]
                                for q in range(workers)],
                "counters": counters,
                "backends": {str(slot): {name: int(backend_counters[name][i])
                                         for name in backend_counters.dtype.names}
                             for i, slot in enumerate(slots)},
                "services": {str(sid): {name: int(service_counters[name][i])
                                        for name in service_counters.dtype.names}
                             for i, sid in enumerate(service_ids)},
                "flows": samples,
                "ipv4_flows_per_worker": per_worker_flows,
                "received": [g - b for g, b in zip([p.stats()["ipackets"] for p in ports],
                                                   before)],
            })
        for worker in engine_workers:
            worker.discard_handed_over()
            worker.close()
        if handoff is not None:
            handoff.close()
        lb.close()
        for port in ports:
            port.close()
        result["mbufs_in_use_at_exit"] = pool.in_use
        pool.close()
    finally:
        Path(out_path).write_text(json.dumps(result))
        dataplane.eal_cleanup()
        remove_runtime_dir(prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
