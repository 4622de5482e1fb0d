"""rplb as a systemd service: `rplb-dpdk --install-service --root DIR` puts
rplb.service and an example /etc/rplb/ in place, never overwrites what is
there, and systemd-analyze accepts the unit.  Nothing here runs systemd."""

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness import run_cli

UNIT = "etc/systemd/system/rplb.service"
ENV = "etc/rplb/rplb.env"
SERVICES = "etc/rplb/services.yaml"
RPLB_DPDK = os.path.join(os.path.dirname(sys.executable), "rplb-dpdk")

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is missing (scripts/bootstrap.sh installs systemd)")


def install(root: Path):
    proc = run_cli(["--install-service", "--root", str(root)])
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def verify(unit: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60)


def unit_settings(text: str, key: str):
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(key + "=")]


def test_installs_the_unit_and_an_example_etc_rplb(tmp_path):
    proc = install(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"installed {tmp_path}/{path}"
                                        for path in (UNIT, ENV, SERVICES)]
    for path in (UNIT, ENV, SERVICES):
        assert stat.S_IMODE((tmp_path / path).stat().st_mode) == 0o644
    unit = (tmp_path / UNIT).read_text()
    # It starts the rplb-dpdk of the environment that installed it (the
    # checkout's venv), never a link on PATH another checkout may re-point.
    assert unit_settings(unit, "ExecStart") == [
        f"{RPLB_DPDK} $RPLB_EAL_ARGS -- --config /etc/rplb/services.yaml $RPLB_ARGS"]
    assert unit_settings(unit, "EnvironmentFile") == ["/etc/rplb/rplb.env"]
    assert unit_settings(unit, "Restart") == ["on-failure"]
    assert unit_settings(unit, "ExecReload") == [
        f"{RPLB_DPDK} --check-config /etc/rplb/services.yaml $RPLB_ARGS",
        "/bin/kill -HUP $MAINPID"]
    assert unit_settings(unit, "Type") == ["notify"]
    assert "dpdk-hugepages.py --reserve" in unit_settings(unit, "ExecStartPre")[0]
    assert "@RPLB_DPDK@" not in unit


@needs_systemd_analyze
def test_systemd_analyze_accepts_the_unit(tmp_path):
    assert install(tmp_path).returncode == 0
    proc = verify(tmp_path / UNIT)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


@needs_systemd_analyze
def test_systemd_analyze_would_catch_a_broken_unit(tmp_path):
    # The check above can fail: the same verify refuses a unit whose
    # command is missing or whose setting is misspelt.
    assert install(tmp_path).returncode == 0
    unit = tmp_path / UNIT
    text = unit.read_text()
    unit.write_text(text.replace(f"ExecStart={RPLB_DPDK}", "ExecStart=/nonexistent/rplb-dpdk"))
    assert verify(unit).returncode != 0
    unit.write_text(text.replace("Restart=on-failure", "Restart=on-failur"))
    proc = verify(unit)
    assert "Restart" in proc.stderr or "restart" in proc.stderr


def test_never_overwrites_what_exists(tmp_path):
    assert install(tmp_path).returncode == 0
    edited = {path: f"# the operator's {path}\n" for path in (UNIT, ENV, SERVICES)}
    for path, text in edited.items():
        (tmp_path / path).write_text(text)
    proc = install(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"kept {tmp_path}/{path} (it exists: left as it is)"
                                        for path in (UNIT, ENV, SERVICES)]
    for path, text in edited.items():
        assert (tmp_path / path).read_text() == text
    # only the missing one is written
    (tmp_path / SERVICES).unlink()
    proc = install(tmp_path)
    assert f"installed {tmp_path}/{SERVICES}" in proc.stdout
    assert (tmp_path / ENV).read_text() == edited[ENV]
    assert sorted(p.name for p in (tmp_path / "etc" / "rplb").iterdir()) == [
        "rplb.env", "services.yaml"]          # no temporary files left


def test_unwritable_root_is_one_error_line(tmp_path):
    (tmp_path / "etc").write_text("a file where a directory should be")
    proc = install(tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rplb-dpdk: error: cannot write {tmp_path}")


def environment(path: Path) -> dict:
    """systemd's EnvironmentFile: NAME=value lines, # comments."""
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, value = line.split("=", 1)
            assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", name), line
            values[name] = value
    return values


def test_the_example_options_and_services_pass_the_units_own_check(tmp_path):
    assert install(tmp_path).returncode == 0
    env = environment(tmp_path / ENV)
    assert set(env) == {"RPLB_EAL_ARGS", "RPLB_ARGS", "RPLB_HUGEPAGES"}
    # ExecStartPre's check, with the installed files
    proc = run_cli(["--check-config", str(tmp_path / SERVICES), *shlex.split(env["RPLB_ARGS"])])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{tmp_path / SERVICES}: valid: 1 service, 2 backends")


def test_hugepage_step_does_nothing_without_a_size(tmp_path):
    assert install(tmp_path).returncode == 0
    command = unit_settings((tmp_path / UNIT).read_text(), "ExecStartPre")[0]
    # systemd turns $$ into $ and passes the quoted script to /bin/sh
    argv = shlex.split(command.replace("$$", "$"))
    assert argv[:2] == ["/bin/sh", "-c"]
    proc = subprocess.run(argv, env={"PATH": "/usr/bin:/bin", "RPLB_HUGEPAGES": ""},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""
    assert os.access("/usr/bin/dpdk-hugepages.py", os.X_OK)
