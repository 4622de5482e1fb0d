"""The libFuzzer harness (tests/fuzz/fuzz_engine.c), built with clang, ASan and
UBSan, runs for a bounded time on the seed corpus and on every input that
once crashed (tests/fuzz/regressions).  The long run is documented in
README.md (Hostile input)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FUZZ = Path(__file__).resolve().parent / "fuzz"


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory):
    if shutil.which("clang") is None:
        pytest.fail("clang is needed for the fuzzer (scripts/bootstrap.sh installs it)")
    build = tmp_path_factory.mktemp("build-fuzz")
    env = {**os.environ, "CC": "clang"}
    subprocess.run(["meson", "setup", str(build), str(ROOT), "-Dfuzzer=true",
                    "-Dsanitizers=address,undefined", "-Ddebug_checks=true"], check=True, env=env,
                   capture_output=True, text=True)
    subprocess.run(["ninja", "-C", str(build), "tests/fuzz/rplb-fuzz-engine"], check=True,
                   capture_output=True, text=True)
    return build / "tests" / "fuzz" / "rplb-fuzz-engine"


def run(fuzzer, *args, timeout=300):
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
           "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
    return subprocess.run([str(fuzzer), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_regressions_and_seeds_run_clean(fuzzer):
    inputs = sorted(str(p) for d in ("corpus", "regressions") for p in (FUZZ / d).glob("*"))
    assert len(inputs) >= 10
    proc = run(fuzzer, *inputs)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_bounded_fuzzing_finds_nothing(fuzzer, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(FUZZ / "corpus", corpus)
    proc = run(fuzzer, "-max_total_time=20", "-print_final_stats=1", str(corpus))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stat::number_of_executed_units" in proc.stderr
