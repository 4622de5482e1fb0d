import os
import subprocess
import sys
from pathlib import Path

import pytest

# Test helpers (harness.py, maglev_reference.py) import as top-level modules.
sys.path.insert(0, str(Path(__file__).parent))

# The tools of the environment running the tests (meson, ninja and cython
# build the fuzzer and the flow-table check) come first on PATH, as if that
# environment were activated: `.venv/bin/pytest` works without activating it.
os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable),
                                      os.environ.get("PATH", "")])


@pytest.fixture(autouse=True)
def _away_from_the_checkout(tmp_path, monkeypatch):
    """Every test (and every process it starts) runs in its own folder: from
    the repository root, `python -m rplb` would import the source tree's
    rplb/ (no compiled extension) instead of the installed package."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def c_check(tmp_path_factory):
    """The C checks of tests/c/, built once a session with ASan, UBSan and
    RTE_ASSERT: c_check("rplb-check-flow-table") builds that program and
    returns its path."""
    root = Path(__file__).resolve().parent.parent
    build = tmp_path_factory.mktemp("build-check")
    subprocess.run(["meson", "setup", str(build), str(root), "-Dsanitizers=address,undefined",
                    "-Ddebug_checks=true"], check=True, capture_output=True, text=True)

    def build_program(name):
        subprocess.run(["ninja", "-C", str(build), f"tests/c/{name}"], check=True,
                       capture_output=True, text=True)
        return build / "tests" / "c" / name
    return build_program
