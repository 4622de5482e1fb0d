#!/usr/bin/env python3
"""Replay the example through rplb-dpdk and show what it did to every frame
(run.sh runs this once rplb is installed).

    .venv/bin/python examples/run.py [--out DIR]

rplb runs on two net_pcap virtual ports (no NIC, no hugepages): port 0 reads
clients.pcap, port 1 servers.pcap; what leaves them is written to
to-clients.pcap and to-servers.pcap in a scratch folder (or DIR).  It has
its own EAL --file-prefix and its own control socket in that folder, so it
never meets another rplb-dpdk on the machine.  Once its counters show that
every frame was received and sent (asked through that control socket), it
is stopped with SIGTERM and show.py explains the captures.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scapy.utils import rdpcap

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import show  # noqa: E402  (next to this file)


def processed(stats: dict, frames_in: int) -> bool:
    """Every frame of both captures received, and each one sent or dropped
    (a ping's answer replaces the ping: one frame in, one out)."""
    ports, drops = stats["port"], sum(stats["drops"].values())
    received = sum(p["rx_packets"] for p in ports)
    handled = sum(p["tx_packets"] + p["tx_dropped"] for p in ports) + drops
    return received == frames_in and handled == received


def replay(out: Path) -> int:
    from rplb.control import ControlError, request
    for name in ("clients.pcap", "servers.pcap"):
        shutil.copy(HERE / name, out / name)
    frames_in = len(rdpcap(str(out / "clients.pcap"))) + len(rdpcap(str(out / "servers.pcap")))
    prefix = f"rplb-example-{os.getpid()}"
    control = out / "rplb.sock"
    argv = [sys.executable, "-m", "rplb",
            # EAL: no hugepages, virtual ports only, lcore 0 control, 1 worker
            "--no-huge", "-m", "512", "--no-pci", "-l", "0-1", "--file-prefix", prefix,
            "--log-level=*:warning",
            "--vdev", "net_pcap0,rx_pcap=clients.pcap,tx_pcap=to-clients.pcap",
            "--vdev", "net_pcap1,rx_pcap=servers.pcap,tx_pcap=to-servers.pcap",
            "--", "--config", str(HERE / "services.yaml"), "--control-socket", str(control),
            "--stats-json", "stats.json"]
    print("$ rplb-dpdk " + " ".join(argv[3:]))
    with open(out / "rplb.log", "w") as log:
        proc = subprocess.Popen(argv, cwd=out, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                break
            if time.monotonic() > deadline:
                print("rplb-dpdk did not process the captures within 60 s", file=sys.stderr)
                break
            try:
                reply = request(str(control), {"cmd": "stats"}, timeout=5)
                if reply.get("ok") and processed(reply["stats"], frames_in):
                    break
            except ControlError:
                pass                # not listening yet
            time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        # EAL never removes its runtime directory.
        shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)
    if proc.returncode != 0:
        sys.stderr.write((out / "rplb.log").read_text())
        print(f"rplb-dpdk failed (exit status {proc.returncode}); its output is above and "
              f"in {out}/rplb.log", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder for the captures (default: a new "
                        "/tmp/rplb-example.* folder)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="rplb-example."))
    out.mkdir(parents=True, exist_ok=True)
    status = replay(out)
    if status == 0:
        show.show(out, HERE / "services.yaml")
        print(f"\ncaptures, rplb's output (rplb.log) and counters (stats.json) in {out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
