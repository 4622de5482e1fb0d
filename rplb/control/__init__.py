"""The control socket: change and inspect a running rplb-dpdk (rplbctl's
server and client).

    protocol.py   the requests: commands, fields, parsing, errors
    commands.py   what each command does to the running appliance
    server.py     the socket and its threads
    client.py     one request and its reply (rplbctl)
    files.py      writing a services file (rplbctl save)

None of them imports DPDK: rplbctl uses the client from here.
"""

from rplb.control.client import request
from rplb.control.commands import Controller
from rplb.control.protocol import (COMMANDS, DEFAULT_SOCKET, MAX_REQUEST, ControlError,
                                   parse_request)
from rplb.control.server import ControlServer

__all__ = ["COMMANDS", "ControlError", "ControlServer", "Controller", "DEFAULT_SOCKET",
           "MAX_REQUEST", "parse_request", "request"]
