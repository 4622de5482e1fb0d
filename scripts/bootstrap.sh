#!/usr/bin/env bash
# Install what rplb needs on Debian 12 and build rplb into this checkout's
# own virtual environment, .venv (never into the system Python: Debian's is
# "externally managed", PEP 668).
#
#   bash scripts/bootstrap.sh [--no-links]
#
# 1. Debian packages (apt-get, as root) that are missing: DPDK, the
#    compilers, python3-venv and python3-dev, and the tools the tests use.
# 2. .venv, made with the first python3 >= 3.9 on PATH (or $PYTHON); an
#    existing .venv that works is kept, whatever Python made it (remove
#    .venv to change).
# 3. The Python packages (pip, from PyPI) into .venv.
# 4. rplb itself, built from this checkout: rebuilt only when a source
#    file or the interpreter changed since the last build (a stamp in
#    .venv); a developer's editable install (pip install -e .) of this
#    checkout stays editable (it rebuilds itself on import).
# 5. For root: /usr/local/bin/rplb-dpdk, rplbctl and rplb-bench, links into
#    .venv (an operator's convenience; scripts and tests use .venv/bin).
#    --no-links leaves them alone.
#
# Run again when nothing changed, it checks and rebuilds nothing.  Every
# failure ends with one line, "bootstrap: error: ...", saying what to do;
# the output of the step that failed is in build/bootstrap-*.log.
set -Eeuo pipefail
# A step that fails without its own message still ends in one line.
trap 'echo "bootstrap: error: \`$BASH_COMMAND\` failed (line $LINENO of $0): please report it" >&2' ERR

root=$(cd "$(dirname "$0")/.." && pwd -P)
venv=$root/.venv
logs=$root/build
links=yes
for arg in "$@"; do
    case $arg in
        --no-links) links=no ;;
        -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bootstrap: error: unknown option $arg (see --help)" >&2; exit 2 ;;
    esac
done

fail() {
    echo "bootstrap: error: $*" >&2
    exit 1
}
say() {
    echo "bootstrap: $*"
}
mkdir -p "$logs" || fail "cannot create $logs: is the checkout writable?"

# ---- 1. Debian packages ------------------------------------------------------
# The build: DPDK 22.11 and a C toolchain; the venv: python3-venv and
# python3-dev for Debian's own Python.  The tests: iproute2 (netns, veth),
# ethtool, ping, curl, tcpdump, valgrind (callgrind), clang and its
# sanitizer runtimes (fuzzer), systemd (systemd-analyze verify).
APT_PACKAGES=(dpdk dpdk-dev libdpdk-dev pkg-config gcc libc6-dev
              python3 python3-venv python3-dev
              iproute2 ethtool iputils-ping curl tcpdump valgrind
              clang libclang-rt-14-dev systemd)

if command -v dpkg-query >/dev/null; then
    installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${APT_PACKAGES[@]}" 2>/dev/null \
                | awk '$NF == "installed" {print $1}' || true)
    missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        grep -qx "$pkg" <<<"$installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        [ "$(id -u)" = 0 ] || fail "missing Debian packages: ${missing[*]}; run this as root" \
            "(sudo bash scripts/bootstrap.sh) or apt-get install them"
        say "apt-get install ${missing[*]}"
        log=$logs/bootstrap-apt.log
        apt-get update >"$log" 2>&1 \
            || fail "apt-get update failed (is a Debian mirror reachable?): see $log"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            "${missing[@]}" >>"$log" 2>&1 \
            || fail "apt-get install ${missing[*]} failed: see $log"
    fi
else
    say "not Debian (no dpkg-query): make sure these are installed: ${APT_PACKAGES[*]}"
fi

# ---- 2. the virtual environment ---------------------------------------------
python_ok() {       # $1: an interpreter; true if it is Python >= 3.9
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null
}
describe() {        # $1: an interpreter -> "3.11.2 (/usr/bin/python3.11)"
    "$1" -c 'import os, sys; print(sys.version.split()[0], "(" + os.path.realpath(sys.executable) + ")")'
}

if [ -x "$venv/bin/python" ] && python_ok "$venv/bin/python" \
        && { [ -z "${PYTHON:-}" ] \
             || [ "$(describe "$venv/bin/python")" = "$(describe "$PYTHON" 2>/dev/null)" ]; }; then
    :   # keep it
else
    if [ -n "${PYTHON:-}" ]; then
        python=$(command -v "$PYTHON") || fail "PYTHON=$PYTHON: no such program"
        if ! python_ok "$python"; then
            version=$("$python" --version 2>&1 | head -n 1 || true)
            fail "PYTHON=$PYTHON is not Python >= 3.9 (${version:-it does not run}):" \
                "point PYTHON at a newer one"
        fi
    else
        python=
        IFS=: read -ra path_dirs <<<"$PATH"
        for dir in "${path_dirs[@]}"; do
            if [ -x "$dir/python3" ] && python_ok "$dir/python3"; then
                python=$dir/python3
                break
            fi
        done
        [ -n "$python" ] || fail "no python3 >= 3.9 on PATH: install one" \
            "(Debian 12: apt-get install python3 python3-venv python3-dev) or set PYTHON=/path/to/python3"
    fi
    [ ! -e "$venv" ] || say "replacing $venv (it does not run, or PYTHON asks for another Python)"
    rm -rf "$venv"
    log=$logs/bootstrap-venv.log
    "$python" -m venv "$venv" >"$log" 2>&1 \
        || { rm -rf "$venv"; fail "$python -m venv failed: for Debian's Python, apt-get install" \
             "python3-venv; see $log"; }
    say "created $venv with Python $(describe "$python")"
fi
# The venv's tools (meson, ninja, cython) first, as if it were activated:
# the build finds them on PATH.
export PATH="$venv/bin:$PATH"
unset PYTHONHOME PYTHONPATH

# ---- 3. Python packages -------------------------------------------------------
# The build's requirements (pyproject.toml [build-system]), rplb's own
# dependencies and the test suite's ([project.optional-dependencies] test);
# tests/test_bootstrap.py checks that this list covers pyproject.toml.
PIP_PACKAGES=("meson-python>=0.15" "meson>=1.4" "ninja" "cython>=3.0" "numpy>=1.24"
              "pyelftools>=0.29" "PyYAML>=6"
              "pytest>=7" "scapy>=2.5" "hypothesis>=6" "prometheus_client>=0.17")

interpreter=$(describe "$venv/bin/python")
pip_stamp=$venv/.rplb-pip-stamp
pip_wanted="$interpreter ${PIP_PACKAGES[*]}"
if [ "$(cat "$pip_stamp" 2>/dev/null)" != "$pip_wanted" ]; then
    say "pip install ${PIP_PACKAGES[*]}"
    log=$logs/bootstrap-pip.log
    "$venv/bin/python" -m pip install --disable-pip-version-check "${PIP_PACKAGES[@]}" \
        >"$log" 2>&1 \
        || fail "pip install into $venv failed (is PyPI reachable? a proxy needs" \
            "HTTPS_PROXY): see $log"
    echo "$pip_wanted" >"$pip_stamp"
fi

# ---- 4. rplb ---------------------------------------------------------------------
# What the build reads: every tracked file but the documentation, the
# examples, CI, the Python tests and the fuzzer's inputs (a C harness or a
# meson.build under tests/ counts).
build_inputs() {
    if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -C "$root" ls-files -z --cached --others --exclude-standard
    else
        (cd "$root" && find . -type f ! -path './.venv/*' ! -path './build/*' \
            ! -path './.git/*' -printf '%P\0')
    fi | grep -zv -e '^docs/' -e '^examples/' -e '^\.ci/' -e '\.md$' \
                  -e '^tests/.*\.py$' -e '^tests/fuzz/corpus/' -e '^tests/fuzz/regressions/' \
        | LC_ALL=C sort -z
}
sources_hash=$(cd "$root" && build_inputs | { xargs -0 sha256sum 2>/dev/null || true; } \
               | sha256sum | cut -d' ' -f1)
build_stamp=$venv/.rplb-build-stamp
build_wanted="$interpreter $sources_hash"

imports() {         # $1: in-venv (a regular install) or anywhere (editable)
    (cd / && "$venv/bin/python" - "$1" <<'PYTHON'
import os, sys
import rplb.dataplane
where = os.path.realpath(rplb.dataplane.__file__)
inside = where.startswith(os.path.realpath(sys.prefix) + os.sep)
sys.exit(sys.argv[1] == "in-venv" and not inside)
PYTHON
    ) >/dev/null 2>&1
}

editable=$("$venv/bin/python" -m pip show rplb 2>/dev/null \
           | sed -n 's/^Editable project location: //p' || true)
if [ -n "$editable" ] && [ "$(cd "$editable" 2>/dev/null && pwd -P)" = "$root" ]; then
    # meson-python's editable install rebuilds on import: nothing to do here.
    imports anywhere || { log=$logs/bootstrap-build.log
        (cd / && "$venv/bin/python" -c 'import rplb.dataplane') >"$log" 2>&1 || true
        fail "the editable install of $root does not import: see $log"; }
    state="editable install of $root"
elif [ "$(cat "$build_stamp" 2>/dev/null)" = "$build_wanted" ] && imports in-venv; then
    state="up to date, nothing rebuilt"
else
    say "building rplb (under a minute)"
    log=$logs/bootstrap-build.log
    started=$SECONDS
    rm -f "$build_stamp"
    # --no-build-isolation: build with the tools just installed, no second download.
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-build-isolation \
        "$root" >"$log" 2>&1 || fail "building rplb failed: see $log"
    imports in-venv || fail "rplb was built but does not import from $venv: see $log"
    echo "$build_wanted" >"$build_stamp"
    state="built in $((SECONDS - started)) s"
fi

# ---- 5. commands on root's PATH -------------------------------------------------
if [ "$links" = yes ] && [ "$(id -u)" = 0 ]; then
    for command in rplb-dpdk rplbctl rplb-bench; do
        target=/usr/local/bin/$command
        if [ -e "$target" ] && [ ! -L "$target" ]; then
            say "$target exists and is not a link: left as it is"
        elif [ "$(readlink "$target" 2>/dev/null)" != "$venv/bin/$command" ]; then
            ln -sfn "$venv/bin/$command" "$target" \
                || fail "cannot link $target -> $venv/bin/$command"
        fi
    done
    where="; rplb-dpdk, rplbctl, rplb-bench in /usr/local/bin"
else
    where="; commands in $venv/bin"
fi
say "rplb ready in $venv (Python $interpreter): $state$where"
