"""The exception every DPDK failure becomes (no DPDK import here)."""

import errno as _errno
import os


class RplbError(Exception):
    """A DPDK call failed.

    ``errno`` is the positive error number (0 when DPDK gave none) and
    ``message`` says what rplb was doing; ``str()`` gives both, readably.
    """

    def __init__(self, errno: int, message: str, detail: str = ""):
        self.errno = abs(errno)
        self.message = message
        if not detail and self.errno:
            detail = os.strerror(self.errno)
        self.detail = detail
        name = _errno.errorcode.get(self.errno)
        text = message
        if detail:
            text += f": {detail}"
        if name:
            text += f" ({name})"
        super().__init__(text)
