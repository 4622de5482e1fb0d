"""The source tree's layout: the agreed top level, the fast path alone in
csrc/, the harnesses with what uses them.  (The structs shared by C and
Python: tests/test_contract.py.)"""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The agreed top level (issue 16, and the team's style sketch); hidden
# entries (.git, .ci, .gitignore) and local build products aside.
TOP_LEVEL = {"rplb", "csrc", "examples", "tests", "setup.py", "meson.build", "README.md",
             "meson.options", "pyproject.toml", "docs", "scripts", "benchmarks"}
LOCAL = {"build", "__pycache__"}


def tracked_files():
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [Path(line) for line in out.stdout.splitlines()]


def test_top_level_is_the_agreed_one():
    top = {p.parts[0] for p in tracked_files() if not p.parts[0].startswith(".")}
    assert top <= TOP_LEVEL, sorted(top - TOP_LEVEL)
    assert {"rplb", "csrc", "tests", "benchmarks", "docs"} <= top


def test_csrc_holds_the_fast_path_only():
    """No program lives in csrc/: the harnesses sit with what uses them."""
    sources = [ROOT / p for p in tracked_files() if p.parts[0] == "csrc" and p.suffix in (".c", ".h")]
    assert sources
    for path in sources:
        text = path.read_text()
        for marker in ("int\nmain(", "LLVMFuzzerTestOneInput", "getopt"):
            assert marker not in text, f"{path.relative_to(ROOT)} holds a program ({marker!r})"
    for harness in ("tests/fuzz/fuzz_engine.c", "tests/c/check_flow_table.c",
                    "benchmarks/bench_engine.c"):
        assert (ROOT / harness).is_file(), harness

