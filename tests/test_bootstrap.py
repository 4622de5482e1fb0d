"""The install (scripts/bootstrap.sh) and CI (.ci/run).

CI runs README.md's two quick-start commands verbatim in a fresh clone with
root's plain PATH (that is the proof that a new operator's install works);
here: that CI finds exactly those two commands, that bootstrap installs
what the project declares, that a copy of this checkout bootstraps on
Debian's own Python, that running it again rebuilds nothing, and that
each failure is one line saying what to do.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = ROOT / "scripts" / "bootstrap.sh"
PLAIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEBIAN_PYTHON = "/usr/bin/python3"


# ---- CI ------------------------------------------------------------------------

def quick_start(readme: Path) -> subprocess.CompletedProcess:
    """.ci/run's own extraction, run on a copy of it next to readme."""
    ci = readme.parent / ".ci" / "run"
    ci.parent.mkdir(exist_ok=True)
    shutil.copy(ROOT / ".ci" / "run", ci)
    return subprocess.run(["bash", str(ci), "--print-commands"], capture_output=True,
                          text=True, timeout=30)


def test_ci_runs_exactly_the_two_quick_start_commands_of_the_readme():
    proc = subprocess.run(["bash", str(ROOT / ".ci" / "run"), "--print-commands"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    commands = proc.stdout.splitlines()
    assert commands == ["bash examples/run.sh",
                        "bash scripts/bootstrap.sh && .venv/bin/pytest"]
    # ... which is what the README shows, in its quick start
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert [line[4:] for line in section.splitlines() if line.startswith("    ")] == commands


@pytest.mark.parametrize("count", [1, 3])
def test_ci_refuses_a_quick_start_without_exactly_two_commands(tmp_path, count):
    lines = "\n".join(f"    echo command {i}" for i in range(count))
    (tmp_path / "README.md").write_text(f"# x\n\n## Quick start\n\n{lines}\n\n## Next\n\n"
                                        "    echo not a quick-start command\n")
    proc = quick_start(tmp_path / "README.md")
    assert proc.stdout.splitlines() == [f"echo command {i}" for i in range(count)]
    run = subprocess.run(["bash", str(tmp_path / ".ci" / "run")], capture_output=True,
                         text=True, timeout=30)
    assert run.returncode == 1
    assert f"must hold exactly two commands, found {count}" in run.stderr


# ---- what bootstrap installs ---------------------------------------------------------

def bootstrap_list(name: str):
    text = BOOTSTRAP.read_text()
    body = re.search(rf"^{name}=\((.*?)\)", text, re.S | re.M).group(1)
    return re.findall(r'"([^"]+)"|(\S+)', body)


def requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~ \[]", spec, 1)[0].lower().replace("_", "-")


def test_bootstrap_installs_every_python_requirement_of_the_project():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = {requirement_name(r) for r in (
        *project["build-system"]["requires"], *project["project"]["dependencies"],
        *project["project"]["optional-dependencies"]["test"])}
    installed = {requirement_name(a or b) for a, b in bootstrap_list("PIP_PACKAGES")}
    assert declared <= installed, declared - installed


# The suite's tools and the packages that bring them (a test that skips
# without its tool would otherwise pass on a machine that lacks it).
TOOLS = {"ip": "iproute2", "ethtool": "ethtool", "ping": "iputils-ping", "curl": "curl",
         "tcpdump": "tcpdump", "valgrind": "valgrind", "clang": "clang",
         "systemd-analyze": "systemd", "dpdk-testpmd": "dpdk", "dpdk-telemetry.py": "dpdk",
         "dpdk-hugepages.py": "dpdk", "pkg-config": "pkg-config", "gcc": "gcc"}


def test_bootstrap_installs_the_debian_packages_the_suite_uses():
    packages = {a or b for a, b in bootstrap_list("APT_PACKAGES")}
    assert set(TOOLS.values()) | {"dpdk-dev", "libdpdk-dev", "python3-venv", "python3-dev",
                                  "libclang-rt-14-dev"} <= packages
    missing = [tool for tool in TOOLS if shutil.which(tool, path=PLAIN_PATH) is None]
    assert not missing, f"run scripts/bootstrap.sh: {missing} missing"


# ---- running bootstrap ---------------------------------------------------------------

def copy_checkout(destination: Path) -> Path:
    """This checkout's files (tracked, and new ones not ignored), without
    its .venv and build: what a fresh clone holds, uncommitted work included."""
    listing = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], capture_output=True)
    if listing.returncode == 0:
        names = listing.stdout.decode().split("\0")
    else:                       # not a git checkout (a tarball)
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
                 if p.is_file() and p.relative_to(ROOT).parts[0] not in (".venv", "build", ".git")]
    for name in names:
        if name and (ROOT / name).is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)
    return destination


def bootstrap(checkout: Path, timeout=600, **env) -> subprocess.CompletedProcess:
    """bootstrap.sh --no-links (the links are the machine's, not a test's)
    in root's plain environment."""
    environment = {"HOME": os.environ.get("HOME", "/root"), "PATH": PLAIN_PATH,
                   "LANG": "C.UTF-8", **env}
    return subprocess.run(["bash", str(checkout / "scripts" / "bootstrap.sh"), "--no-links"],
                           capture_output=True, text=True, timeout=timeout, env=environment)


def one_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bootstrap: error: "), proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def fresh_install(tmp_path_factory):
    """A copy of this checkout, bootstrapped on Debian's own Python."""
    if not os.access(DEBIAN_PYTHON, os.X_OK):
        pytest.skip("not Debian: no /usr/bin/python3")
    checkout = copy_checkout(tmp_path_factory.mktemp("fresh") / "rplb")
    proc = bootstrap(checkout, PYTHON=DEBIAN_PYTHON)
    return checkout, proc


def test_a_fresh_checkout_installs_into_its_own_venv_on_debians_python(fresh_install):
    checkout, proc = fresh_install
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"bootstrap: created {checkout}/.venv with Python " + \
        subprocess.run([DEBIAN_PYTHON, "-c", "import os, sys; print(sys.version.split()[0], "
                        "'(' + os.path.realpath(sys.executable) + ')')"],
                       capture_output=True, text=True).stdout.strip()
    assert "built in" in lines[-1]
    venv_python = checkout / ".venv" / "bin" / "python"
    assert os.path.realpath(venv_python) == os.path.realpath(DEBIAN_PYTHON)
    # from anywhere, the venv runs the installed rplb, with its compiled bridge
    check = subprocess.run([str(venv_python), "-c", "import rplb.dataplane, sys; "
                            "print(rplb.dataplane.__file__.startswith(sys.prefix))"],
                           capture_output=True, text=True, cwd="/")
    assert check.stdout.strip() == "True", check.stderr
    for command in ("rplb-dpdk", "rplbctl", "rplb-bench"):
        assert os.access(checkout / ".venv" / "bin" / command, os.X_OK)
    # Debian's own Python was left alone (PEP 668)
    assert subprocess.run([DEBIAN_PYTHON, "-c", "import rplb"], capture_output=True,
                          cwd="/").returncode != 0


def test_running_it_again_rebuilds_nothing(fresh_install):
    checkout, first = fresh_install
    assert first.returncode == 0
    extension = next((checkout / ".venv").glob("lib/python3*/site-packages/rplb/dataplane*.so"))
    built = extension.stat().st_mtime_ns
    started = time.monotonic()
    proc = bootstrap(checkout)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"bootstrap: rplb ready in {checkout}/.venv (Python "
        f"{first.stdout.splitlines()[0].split(' with Python ')[1]}): up to date, nothing "
        f"rebuilt; commands in {checkout}/.venv/bin"]
    assert extension.stat().st_mtime_ns == built
    assert elapsed < 15, f"{elapsed:.1f} s for a bootstrap with nothing to do"


def test_a_build_failure_points_at_the_log(fresh_install):
    checkout, first = fresh_install
    assert first.returncode == 0
    source = checkout / "csrc" / "stats.c"
    source.write_text(source.read_text() + "\n#error a change that does not compile\n")
    proc = bootstrap(checkout)
    log = checkout / "build" / "bootstrap-build.log"
    assert one_error(proc) == f"bootstrap: error: building rplb failed: see {log}"
    assert "a change that does not compile" in log.read_text()


@pytest.fixture
def bare_checkout(tmp_path):
    return copy_checkout(tmp_path / "rplb")


def fake_python(directory: Path, script: str) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / "python3"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


def test_a_python_older_than_3_9_is_refused(bare_checkout, tmp_path):
    old = fake_python(tmp_path / "old", 'echo "Python 3.8.10"; exit 1\n')
    line = one_error(bootstrap(bare_checkout, PYTHON=str(old)))
    assert line == (f"bootstrap: error: PYTHON={old} is not Python >= 3.9 (Python 3.8.10): "
                    "point PYTHON at a newer one")
    assert not (bare_checkout / ".venv").exists()


def test_no_python_3_9_on_path_says_what_to_install(bare_checkout, tmp_path):
    # root's PATH, without any python: every program of /usr/bin and /bin
    # but the pythons, plus an old python3 first
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        for entry in os.scandir(directory):
            if not entry.name.startswith("python") and not (bin_dir / entry.name).exists():
                (bin_dir / entry.name).symlink_to(entry.path)
    fake_python(tmp_path / "old", 'echo "Python 3.7.3"; exit 1\n')
    proc = subprocess.run(["bash", str(bare_checkout / "scripts" / "bootstrap.sh"),
                           "--no-links"], capture_output=True, text=True, timeout=60,
                          env={"HOME": "/root", "PATH": f"{tmp_path / 'old'}:{bin_dir}"})
    assert one_error(proc) == (
        "bootstrap: error: no python3 >= 3.9 on PATH: install one (Debian 12: apt-get "
        "install python3 python3-venv python3-dev) or set PYTHON=/path/to/python3")


def test_a_python_without_venv_asks_for_python3_venv(bare_checkout, tmp_path):
    broken = fake_python(tmp_path / "novenv", f"""\
if [ "$1" = -m ] && [ "$2" = venv ]; then
    echo "The virtual environment was not created successfully because ensurepip is not
available.  On Debian/Ubuntu systems, you need to install the python3-venv package" >&2
    exit 1
fi
exec {DEBIAN_PYTHON} "$@"
""")
    line = one_error(bootstrap(bare_checkout, PYTHON=str(broken)))
    log = bare_checkout / "build" / "bootstrap-venv.log"
    assert line == (f"bootstrap: error: {broken} -m venv failed: for Debian's Python, "
                    f"apt-get install python3-venv; see {log}")
    assert "ensurepip is not" in log.read_text()
    assert not (bare_checkout / ".venv").exists()


def test_an_unreachable_package_index_is_named(bare_checkout):
    proc = bootstrap(bare_checkout, PYTHON=DEBIAN_PYTHON, PIP_CONFIG_FILE=os.devnull,
                     PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_RETRIES="0",
                     PIP_TIMEOUT="2", PIP_NO_CACHE_DIR="1")
    log = bare_checkout / "build" / "bootstrap-pip.log"
    assert one_error(proc) == (
        f"bootstrap: error: pip install into {bare_checkout}/.venv failed (is PyPI reachable? "
        f"a proxy needs HTTPS_PROXY): see {log}")
    assert "127.0.0.1" in log.read_text()
