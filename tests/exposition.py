"""A strict parser of Prometheus's text exposition format 0.0.4, the oracle
of the endpoint's tests: stricter than Prometheus itself where rplb's own
output is concerned (no blank lines, no comments but HELP and TYPE, HELP
and TYPE before a family's samples, no duplicate series), and as strict as
the format on everything else (names, label escapes, values).

https://prometheus.io/docs/instrumenting/exposition_formats/
"""

from __future__ import annotations

import math
import re
from typing import Dict, FrozenSet, Tuple

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# A label value: anything but a backslash, a quote or a newline, or one of
# the three escapes.
LABEL_VALUE = re.compile(r'"((?:[^"\\\n]|\\[\\"n])*)"')
# Go's ParseFloat, as Prometheus reads values.
VALUE = re.compile(r"[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|Inf|NaN)\Z")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}

Series = Tuple[str, FrozenSet[Tuple[str, str]]]


class ExpositionError(AssertionError):
    pass


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def _labels(text: str, line: str) -> FrozenSet[Tuple[str, str]]:
    """The labels of '{a="x",b="y"}' (braces included), each name once."""
    if not text.startswith("{") or not text.endswith("}"):
        raise ExpositionError(f"labels not in braces: {line!r}")
    body, at, labels = text[1:-1], 0, {}
    while at < len(body):
        name = LABEL_NAME.match(body, at)
        if not name or body[name.end():name.end() + 1] != "=":
            raise ExpositionError(f"bad label name at {body[at:]!r}: {line!r}")
        if name.group().startswith("__"):
            raise ExpositionError(f"reserved label name {name.group()!r}: {line!r}")
        value = LABEL_VALUE.match(body, name.end() + 1)
        if not value:
            raise ExpositionError(f"bad label value at {body[name.end() + 1:]!r}: {line!r}")
        if name.group() in labels:
            raise ExpositionError(f"label {name.group()!r} twice: {line!r}")
        labels[name.group()] = _unescape(value.group(1))
        at = value.end()
        if at < len(body):
            if body[at] != ",":
                raise ExpositionError(f"expected ',' at {body[at:]!r}: {line!r}")
            at += 1
            if at == len(body):
                raise ExpositionError(f"trailing comma: {line!r}")
    return frozenset(labels.items())


def parse(text: str) -> Dict[Series, float]:
    """{(name, frozenset(labels)): value (an int if written as one)} of a
    whole exposition; raises
    ExpositionError (an AssertionError) naming the first fault."""
    if not text.endswith("\n"):
        raise ExpositionError("the text does not end with a newline")
    samples: Dict[Series, float] = {}
    types: Dict[str, str] = {}
    helps = set()
    finished = set()                # families whose samples are over
    sampled = set()                 # families with samples
    current = None
    for line in text[:-1].split("\n"):
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) < 4 or parts[1] not in ("HELP", "TYPE"):
                raise ExpositionError(f"a comment other than HELP or TYPE: {line!r}")
            name = parts[2]
            if not METRIC_NAME.match(name):
                raise ExpositionError(f"bad metric name: {line!r}")
            if name in finished or name in sampled:
                raise ExpositionError(f"{name}'s HELP/TYPE after its samples: {line!r}")
            if parts[1] == "TYPE":
                if parts[3] not in TYPES or name in types:
                    raise ExpositionError(f"bad or second TYPE: {line!r}")
                types[name] = parts[3]
            else:
                if name in helps or re.search(r"\\[^\\n]|\\\Z", parts[3]):
                    raise ExpositionError(f"second HELP or bad escape: {line!r}")
                helps.add(name)
            if current is not None and current != name:
                finished.add(current)
            current = name
            continue
        if not line:
            raise ExpositionError("a blank line")
        brace = line.find("{")
        if brace >= 0:
            name = line[:brace]
            close = line.rfind("}")
            labels = _labels(line[brace:close + 1], line)
            rest = line[close + 1:]
        else:
            name, _, rest = line.partition(" ")
            rest = " " + rest
            labels = frozenset()
        if not METRIC_NAME.match(name):
            raise ExpositionError(f"bad metric name: {line!r}")
        fields = rest.split(" ")
        if fields[0] != "" or len(fields) not in (2, 3):
            raise ExpositionError(f"expected ' VALUE [TIMESTAMP]' after the labels: {line!r}")
        if not VALUE.match(fields[1]):
            raise ExpositionError(f"bad value {fields[1]!r}: {line!r}")
        if len(fields) == 3 and not re.fullmatch(r"-?\d+", fields[2]):
            raise ExpositionError(f"bad timestamp: {line!r}")
        if name not in types:
            raise ExpositionError(f"{name} has no TYPE before its samples")
        if name in finished:
            raise ExpositionError(f"{name}'s samples are not in one group: {line!r}")
        if current is not None and current != name:
            finished.add(current)
        current = name
        if (name, labels) in samples:
            raise ExpositionError(f"a second sample of one series: {line!r}")
        # Integers exactly (a float has 53 bits; counters go to 64).
        value = int(fields[1]) if re.fullmatch(r"[+-]?\d+", fields[1]) \
            else float(fields[1].replace("Inf", "inf"))
        if types[name] == "counter" and (value < 0 or math.isnan(value)):
            raise ExpositionError(f"a counter below zero: {line!r}")
        samples[(name, labels)] = value
        sampled.add(name)
    return samples


def metric(samples: Dict[Series, float], name: str, **labels) -> float:
    return samples[(name, frozenset((k, str(v)) for k, v in labels.items()))]
