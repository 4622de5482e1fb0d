"""The spec structs shared by C and Python: one definition (csrc/rplb.h),
numpy dtypes generated from the C layout table, and this check that the
layout is what the fast path and rplb.tables assume.  And the source tree's
layout: the agreed top level, the fast path alone in csrc/, the harnesses
with what uses them."""

import subprocess
import sys
from pathlib import Path

import pytest

CHECK = r"""
from rplb.tables import spec_dtypes
d = spec_dtypes()
s, b = d["rplb_service_spec"], d["rplb_backend_spec"]
print(s.itemsize, [(n, s.fields[n][1]) for n in s.names])
print(b.itemsize, [(n, b.fields[n][1]) for n in b.names])
"""


def test_spec_struct_layout():
    # The layout table lives in the extension; no EAL is needed to read it.
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                         check=True, cwd="/").stdout.splitlines()
    assert out[0] == ("20 [('vip', 0), ('port', 4), ('proto', 6), ('reserved', 7), "
                      "('service_id', 8), ('first_backend', 12), ('n_backends', 16)]")
    assert out[1] == ("16 [('ip', 0), ('port', 4), ('weight', 6), ('backend_id', 8), "
                      "('service_index', 12)]")


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

