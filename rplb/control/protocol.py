"""The control socket's protocol: one JSON object per line each way.

A request names a command and its fields::

    {"cmd": "backend.add", "service": "web", "ip": "192.168.1.13", "port": 8080, "weight": 5}

and gets one reply line, ``{"ok": true, ...}`` or
``{"ok": false, "error": "one clear line"}``.  The commands and their
fields are :data:`COMMANDS`; :func:`parse_request` checks a request line
against them.  docs/control.md describes them for operators.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Tuple

DEFAULT_SOCKET = "/run/rplb/rplb.sock"
MAX_REQUEST = 64 * 1024          # bytes in one request line, newline excluded

__all__ = ["COMMANDS", "ControlError", "DEFAULT_SOCKET", "MAX_REQUEST", "command_label",
           "one_line", "parse_request"]


class ControlError(Exception):
    """One line for the operator (a refused request, or a socket that cannot be set up)."""


_TYPES = {"string": str, "integer": int, "object": dict}

#: command -> {field: (type, required)}.  Any other field is refused.
COMMANDS: Dict[str, Dict[str, Tuple[str, bool]]] = {
    "status": {},
    "service.list": {},
    "service.add": {"service": ("object", True)},
    "service.del": {"service": ("string", True)},
    "backend.add": {"service": ("string", True), "ip": ("string", True),
                    "port": ("integer", True), "weight": ("integer", False)},
    "backend.del": {"service": ("string", True), "ip": ("string", True),
                    "port": ("integer", True)},
    "backend.set-weight": {"service": ("string", True), "ip": ("string", True),
                           "port": ("integer", True), "weight": ("integer", True)},
    "backend.disable": {"service": ("string", True), "ip": ("string", True),
                        "port": ("integer", True)},
    "backend.enable": {"service": ("string", True), "ip": ("string", True),
                       "port": ("integer", True)},
    "flows": {},
    "stats": {},
    "reload": {},
    "save": {"path": ("string", False)},
}


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = repr(value)
        return "string " + (text if len(text) <= 40 else text[:37] + "...")
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def command_label(cmd: str) -> str:
    """How messages name a command: as rplbctl spells it ("backend add")."""
    return cmd.replace(".", " ")


def parse_request(line: bytes) -> Tuple[str, dict]:
    """(command, fields) of one request line; ControlError when it is not valid."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ControlError("request is not valid UTF-8") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise ControlError("request is not valid JSON: nested too deeply") from None
    except ValueError as err:   # json.JSONDecodeError, or an int over 4300 digits
        detail = err.msg if isinstance(err, json.JSONDecodeError) else str(err)
        where = (f" at column {err.colno}" if isinstance(err, json.JSONDecodeError) else "")
        raise ControlError(f"request is not valid JSON{where}: {detail} "
                           "(send one JSON object per line)") from None
    if not isinstance(data, dict):
        raise ControlError(f"request must be a JSON object, got {_describe(data)}")
    if "cmd" not in data:
        raise ControlError(f"request has no \"cmd\" (commands: {', '.join(COMMANDS)})")
    cmd = data["cmd"]
    if not isinstance(cmd, str):
        raise ControlError(f"\"cmd\" must be a string, got {_describe(cmd)}")
    if cmd not in COMMANDS:
        shown = cmd if len(cmd) <= 40 and cmd.isprintable() else cmd[:37] + "..."
        raise ControlError(f"unknown command {shown!r} (commands: {', '.join(COMMANDS)})")
    spec = COMMANDS[cmd]
    fields = {}
    for name, value in data.items():
        if name == "cmd":
            continue
        if name not in spec:
            allowed = ", ".join(spec) or "none"
            shown = name if len(name) <= 40 and name.isprintable() else name[:37] + "..."
            raise ControlError(f"{command_label(cmd)}: unknown field {shown!r} (fields: {allowed})")
        kind, _ = spec[name]
        expected = _TYPES[kind]
        if isinstance(value, bool) or not isinstance(value, expected):
            raise ControlError(f"{command_label(cmd)}: field {name!r} must be {'an' if kind[0] in 'aeiou' else 'a'} "
                               f"{kind}, got {_describe(value)}")
        fields[name] = value
    for name, (_, required) in spec.items():
        if required and name not in fields:
            raise ControlError(f"{command_label(cmd)}: missing field {name!r}")
    return cmd, fields



def one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())
