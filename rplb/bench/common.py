"""What every part of rplb-bench shares: its name, its log, its error, and
how it names and runs DPDK processes (file prefixes, rplb's command)."""

from __future__ import annotations

import os
import shutil
import sys
from typing import List

PROG = "rplb-bench"


def log(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """One line for the operator, exit status 1."""


_prefix_counter = iter(range(1 << 30))


def file_prefix(tag: str) -> str:
    return f"rplbbench{os.getpid()}_{tag}_{next(_prefix_counter)}"


def remove_runtime_dir(prefix: str) -> None:
    shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)


def rplb_burst() -> int:
    """rplb's rx burst (RPLB_BURST), which testpmd is given too: both
    programs read as many packets at once."""
    from rplb import contract
    return contract.BURST


def rplb_command() -> List[str]:
    return [sys.executable, "-m", "rplb"]
