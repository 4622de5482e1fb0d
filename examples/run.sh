#!/usr/bin/env bash
# Run rplb on the example: clients.pcap arrives on the frontend port 0,
# the servers' replies (servers.pcap) on the backend port 1, and what rplb
# did to every frame is shown (run.py, show.py).  Two net_pcap virtual
# ports: no NIC and no hugepages needed.  Installs and builds rplb first
# if needed (scripts/bootstrap.sh, into the checkout's .venv).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd -P)
bash "$here/../scripts/bootstrap.sh"
exec "$here/../.venv/bin/python" "$here/run.py" "$@"
