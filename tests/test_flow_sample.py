"""The flow-sample protocol between the control plane and a worker
(csrc/flow_sample.[ch]), driven through the engine's own housekeeping by
tests/c/check_flow_sample.c, built with ASan, UBSan and RTE_ASSERT.

Defects it would have caught: the worker once scanned up to 65,536 records
in one housekeeping call (a stall of rx), and an answer to a request that
had timed out could be taken for the next request's, with more entries
than that one asked for (the C API copied the worker's count, not the
caller's max)."""

import json
import os
import subprocess

import pytest


@pytest.fixture(scope="module")
def checker(c_check):
    return c_check("rplb-check-flow-sample")


def run(checker, *args):
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
           "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
    proc = subprocess.run([str(checker), *args], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_flow_sample_protocol(checker):
    """Step by step (the checker aborts on any failure): an answer comes in
    slices of at most the budget, over the whole table; a complete answer is
    never taken for a newer request; a request that supersedes a half-done
    scan starts it over; no answer exceeds its request or the buffer.  Then
    a real worker lcore and two callers with random sizes and timeouts from
    0 ms, each into a buffer of exactly its size."""
    result = run(checker, "--capacity", "100000", "--rounds", "3000")
    # 251 flows spread over 100,000 records: the whole table, in slices of
    # 256 records a busy loop iteration
    assert result["stored_flows"] == 251
    assert result["slices_for_a_full_answer"] >= 100000 // 256
    # the stress run both abandoned requests and answered many
    assert result["timed_out"] > 0
    assert result["answered"] > result["rounds"] // 10
    assert result["entries"] > 0
