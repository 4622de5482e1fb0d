#!/usr/bin/env bash
# Install everything rplb needs on a fresh Debian 12 machine (as root, with
# only the package registries), then build and install rplb from this tree.
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(dpdk dpdk-dev libdpdk-dev pkg-config gcc libc6-dev
              iproute2 ethtool iputils-ping curl tcpdump valgrind
              clang libclang-rt-14-dev)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap: apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip install -q --disable-pip-version-check \
    "meson-python>=0.15" "meson>=1.1" ninja "cython>=3.0" "numpy>=1.24" \
    "pyelftools>=0.29" "PyYAML>=6" "pytest>=7" "scapy>=2.5" "hypothesis>=6"
# --no-build-isolation: build with the tools just installed, no second download.
# A developer's editable install of this very tree stays editable: a regular
# install over it would leave every `python -m rplb` run outside the tree
# (tests, benchmarks) on a frozen copy of the code.
editable=$("$PYTHON" -m pip show rplb 2>/dev/null \
           | sed -n 's/^Editable project location: //p')
if [ -n "$editable" ] && [ "$(cd "$editable" && pwd -P)" = "$(pwd -P)" ]; then
    "$PYTHON" -m pip install -q --disable-pip-version-check --no-build-isolation -e .
else
    "$PYTHON" -m pip install -q --disable-pip-version-check --no-build-isolation .
fi
echo "bootstrap: rplb installed ($("$PYTHON" -c 'import rplb.dataplane, sys; print(sys.version.split()[0])'))"
