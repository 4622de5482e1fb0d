"""How frames reach the worker that owns their client (csrc/steer.h has the
fast path's side): in hardware where both ports spread IPv4 over the
workers' queues by the client's address themselves (an rte_flow RSS rule:
by source address on the frontend, by destination address on the backend,
one key), else in software (every worker computes each frame's owner and
hands the others over).  Here: the decision, and the lines that tell the
operator which mode each port runs in and why.

No DPDK import: the appliance tries the rules (rplb.dataplane.Port.
steer_by_client) and passes what happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

#: The Toeplitz key of the rules (40 bytes, what NICs take).  Any key would
#: do: both ports hash one field, the client's address, with the same key,
#: so a flow's two directions meet on one queue whatever its value.
RSS_KEY = bytes([0x6d, 0x5a] * 20)

#: The largest indirection table the fast path models (RPLB_STEER_RETA_SIZE).
MAX_RETA_SIZE = 512

#: (port id, name, role "frontend"/"backend", RSS indirection table size)
PortInfo = Tuple[int, str, str, int]

_FIELD = {"frontend": "source", "backend": "destination"}


@dataclass(frozen=True)
class Decision:
    hardware: bool
    reta_size: int                  # the ports' indirection table (hardware)
    lines: Tuple[Tuple[int, str, str, str], ...]    # (port id, name, role, mode and why)

    def log_lines(self, workers: int) -> List[str]:
        return [f"steering to {workers} workers: port {port_id} ({name}, {role}): {text}"
                for port_id, name, role, text in self.lines]


def _reta_problem(ports: Sequence[PortInfo]) -> str:
    """Why the ports' indirection tables cannot be modelled, or ''."""
    sizes = sorted({reta for _, _, _, reta in ports})
    if len(sizes) > 1:
        return (f"their RSS indirection tables differ ({', '.join(map(str, sizes))} "
                "entries), so one client would not map to one queue on both")
    size = sizes[0]
    if size == 0 or size & (size - 1) or size > MAX_RETA_SIZE:
        return (f"its RSS indirection table of {size} entries is not a power of two up to "
                f"{MAX_RETA_SIZE}, which the workers must model for ICMP errors")
    return ""


def decide(ports: Sequence[PortInfo], refusals: Dict[int, str]) -> Decision:
    """ports: frontend then backend; refusals: port id -> the reason a port
    gave for refusing its rule (a port not in it took its rule, or was not
    asked once another refused).  Hardware only if both took it and their
    indirection tables are alike; else software on both (the workers'
    software choice of owner differs from a NIC's, so one port in hardware
    and the other in software would split flows)."""
    problem = "" if refusals else _reta_problem(ports)
    hardware = not refusals and not problem
    lines = []
    for port_id, name, role, _ in ports:
        if hardware:
            text = (f"hardware (rte_flow RSS by the client's {_FIELD[role]} address; "
                    "only ICMP errors are steered in software)")
        elif port_id in refusals:
            text = (f"software (the port refused rte_flow RSS by the client's "
                    f"{_FIELD[role]} address: {refusals[port_id]})")
        elif refusals:
            other = next(iter(refusals))
            text = f"software (port {other} cannot steer in hardware, and both ports must)"
        else:
            text = f"software ({problem})"
        lines.append((port_id, name, role, text))
    return Decision(hardware=hardware, reta_size=ports[0][3] if hardware else 0,
                    lines=tuple(lines))
