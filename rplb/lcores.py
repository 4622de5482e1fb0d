"""The lcores EAL will run, read from its arguments without starting it:
for ``rplb-dpdk --check-config``, which sizes the workers' memory and
mbufs before DPDK exists.  rplb runs one worker on every lcore but the
main one.

EAL's options for lcores (`dpdk-testpmd --help`, EAL's parameters guide):

    -l 0-3,5            lcores 0, 1, 2, 3, 5 (each on the CPU of its number)
    --lcores 0@0,1@0,2@1
                        lcores 0, 1, 2 on CPUs 0, 0, 1; a group of lcores or
                        CPUs in parentheses, e.g. (0-2)@1 or 0@(0,1)
    -c 0xf              lcores by hex mask
    (none)              every CPU the process may run on
"""

from __future__ import annotations

import os
from typing import Iterable, List, Optional, Sequence, Set


class LcoreError(ValueError):
    """An lcore list EAL would refuse; the message names it."""


def _numbers(text: str, option: str) -> Set[int]:
    """'0-3,5' -> {0, 1, 2, 3, 5}; '(0-2)' likewise."""
    text = text.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    out: Set[int] = set()
    for part in text.split(","):
        part = part.strip()
        low, sep, high = part.partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise LcoreError(f"{option} {text!r}: {part!r} is not a number or a range a-b")
        first, last = int(low), int(high) if sep else int(low)
        if last < first:
            raise LcoreError(f"{option} {text!r}: the range {part!r} runs backwards")
        out.update(range(first, last + 1))
    return out


def _top_level_items(text: str) -> List[str]:
    """Split at the commas outside parentheses."""
    items, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return items


def lcores_of_map(text: str) -> Set[int]:
    """The lcore ids of an --lcores map, e.g. '0@0,1@0,2@1' -> {0, 1, 2}."""
    lcores: Set[int] = set()
    for item in _top_level_items(text):
        if not item.strip():
            raise LcoreError(f"--lcores {text!r}: an empty entry")
        lcores |= _numbers(item.partition("@")[0], "--lcores")
    return lcores


def lcores_of_mask(text: str) -> Set[int]:
    try:
        mask = int(text, 16)
    except ValueError:
        raise LcoreError(f"-c {text!r} is not a hexadecimal mask") from None
    return {bit for bit in range(mask.bit_length()) if mask >> bit & 1}


def _option_values(args: Sequence[str], short: str, long: str) -> Iterable[str]:
    """The values of -X VALUE, -XVALUE, --long VALUE, --long=VALUE."""
    args = list(args)
    for i, arg in enumerate(args):
        if arg in (short, long) and i + 1 < len(args):
            yield args[i + 1]
        elif long and arg.startswith(long + "="):
            yield arg[len(long) + 1:]
        elif short and arg.startswith(short) and len(arg) > len(short) and \
                not arg.startswith("--"):
            yield arg[len(short):]


def eal_lcores(eal_args: Sequence[str]) -> Set[int]:
    """The lcore ids EAL will enable for these arguments (the last of -l,
    --lcores, -c wins, as in EAL); without any, every CPU the process may
    run on.  Raises LcoreError for a list EAL would refuse."""
    found: Optional[Set[int]] = None
    for short, long, parse in (("-l", "", lambda v: _numbers(v, "-l")),
                               ("", "--lcores", lcores_of_map),
                               ("-c", "", lcores_of_mask)):
        for value in _option_values(eal_args, short, long):
            found = parse(value)
    if found is None:
        return set(os.sched_getaffinity(0))
    if not found:
        raise LcoreError("no lcore is given")
    return found


def worker_count(eal_args: Sequence[str]) -> int:
    """Workers rplb-dpdk will run with these EAL arguments: every lcore but
    the main one (at least one, which start-up checks)."""
    return max(len(eal_lcores(eal_args)) - 1, 1)
