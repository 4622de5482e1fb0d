#!/usr/bin/env bash
# Run rplb on the example services (services.yaml) with two net_pcap virtual
# ports: clients.pcap arrives on the frontend port, servers.pcap on the
# backend port; what leaves them is written to to-servers.pcap and
# to-clients.pcap in a scratch folder and summarised.  Installs and builds
# rplb first if needed (scripts/bootstrap.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/../scripts/bootstrap.sh"

out=$(mktemp -d /tmp/rplb-example.XXXXXX)
cp "$here/clients.pcap" "$here/servers.pcap" "$out/"
cd "$out"
# --no-huge/-m: no hugepages needed; --no-pci: virtual ports only.
rplb-dpdk --no-huge -m 512 --no-pci -l 0-1 --file-prefix rplb-example --log-level='*:warning' \
    --vdev "net_pcap0,rx_pcap=clients.pcap,tx_pcap=to-clients.pcap" \
    --vdev "net_pcap1,rx_pcap=servers.pcap,tx_pcap=to-servers.pcap" \
    -- --config "$here/services.yaml" --duration 1
rm -rf /var/run/dpdk/rplb-example
python3 "$here/show.py" "$out"
echo
echo "captures and output in $out"
