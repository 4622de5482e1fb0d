"""PMD discovery: which poll-mode drivers this DPDK has and their device
arguments, read from the PMD files with pyelftools (as dpdk-pmdinfo.py does).
No EAL needed.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
from dataclasses import dataclass
from typing import Iterable, List, Optional

from elftools.elf.elffile import ELFFile

_MARKER = b"PMD_INFO_STRING="
_ARGUMENT = re.compile(r"([A-Za-z0-9_.-]+)=(<[^>]*>|[^\s<]+)")


@dataclass(frozen=True)
class PmdInfo:
    name: str
    params: str          # e.g. "rx_pcap=<string> tx_pcap=<string> ..."
    kmod: str
    path: str

    @property
    def arguments(self) -> List[str]:
        # DPDK's strings sometimes lack the space between two arguments
        # ("phy_mac=<int>infinite_rx=<0|1>"): split on name=value pairs.
        return [m.group(1) for m in _ARGUMENT.finditer(self.params)]


def pmd_directory() -> Optional[str]:
    """Where EAL loads PMDs from (Debian: .../dpdk/pmds-XX.Y)."""
    try:
        out = subprocess.run(["pkg-config", "--variable=libdir", "libdpdk"],
                             capture_output=True, text=True, check=True).stdout.strip()
        roots = [out]
    except (OSError, subprocess.CalledProcessError):
        roots = []
    roots += ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/local/lib",
              "/usr/lib64", "/usr/lib"]
    for root in roots:
        found = sorted(glob.glob(os.path.join(root, "dpdk", "pmds-*")))
        if found:
            return found[-1]
    return None


def read_pmd_file(path: str) -> List[PmdInfo]:
    """The PMD_INFO_STRING records of one shared object (empty if none)."""
    infos = []
    with open(path, "rb") as f:
        elf = ELFFile(f)
        section = elf.get_section_by_name(".rodata")
        if section is None:
            return infos
        data = section.data()
    start = data.find(_MARKER)
    while start >= 0:
        end = data.find(b"\0", start)
        text = data[start + len(_MARKER):end if end >= 0 else None]
        try:
            record = json.loads(text.decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = None
        if isinstance(record, dict) and "name" in record:
            infos.append(PmdInfo(record["name"], record.get("params", "").strip(),
                                 record.get("kmod", ""), path))
        start = data.find(_MARKER, start + 1)
    return infos


def list_drivers(directory: Optional[str] = None) -> List[PmdInfo]:
    """Every PMD of the directory, sorted by name."""
    directory = directory or pmd_directory()
    if directory is None or not os.path.isdir(directory):
        raise FileNotFoundError("no DPDK PMD directory found (is the dpdk package installed?)")
    infos = []
    # The directory holds symlinks (.so, .so.23) to each real file: read it once.
    for path in sorted({os.path.realpath(p) for p in glob.glob(os.path.join(directory, "*.so*"))}):
        try:
            infos.extend(read_pmd_file(path))
        except Exception:  # a foreign or broken file is not a PMD: skip it
            continue
    unique = {(i.name, i.params): i for i in infos}
    return sorted(unique.values(), key=lambda i: i.name)


def format_drivers(infos: Iterable[PmdInfo]) -> str:
    infos = list(infos)
    width = max((len(i.name) for i in infos), default=0)
    lines = [f"{i.name:<{width}}  {i.params or '(no device arguments)'}" for i in infos]
    return "\n".join(lines)
