"""The spec structs shared by C and Python: one definition (csrc/rplb.h),
numpy dtypes generated from the C layout table, and this check that the
layout is what the fast path and rplb.tables assume."""

import subprocess
import sys

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
