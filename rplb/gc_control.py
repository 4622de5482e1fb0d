"""Python's garbage collection around large configuration changes.

Building 10,000 services makes a million objects, and replacing them frees
as many.  Left alone, the cyclic collector traverses them all during a
build, and freeing them at once takes one long stretch: either holds the
GIL for 50-400 ms, in which status, telemetry and Prometheus cannot answer
(docs/performance.md, issue 16).  So a build runs without cyclic
collection (quiet_gc), its result is frozen out of later collections
(freeze_long_lived), and what it replaced is freed a slice at a time
(release_slowly).  Configurations form no reference cycles: reference
counting frees them.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from typing import Iterator, Sequence

__all__ = ["LARGE_CHANGE", "freeze_long_lived", "quiet_gc", "release_slowly"]

# A change of more services than this is large: it freezes the objects
# alive after it and frees what it replaced in slices; smaller ones leave
# too few objects to matter.
LARGE_CHANGE = 256

_gc_pauses = 0                  # nested quiet_gc() blocks in progress
_gc_restore = False             # whether the first one found collection enabled
_gc_lock = threading.Lock()


@contextlib.contextmanager
def quiet_gc(large: bool = True) -> Iterator[None]:
    """No cyclic garbage collection while a large change is built.

    Building 10,000 services makes a million objects; each full collection
    meanwhile traverses all of them (and the running configuration's)
    holding the GIL: 100-400 ms in which status, telemetry and Prometheus
    cannot answer.  What a build throws away is freed by reference
    counting; see freeze_long_lived for afterwards.  Before a large
    change (large: it may be one) the young generations are collected
    (cheap: they are small then), so little cyclic garbage survives into a
    freeze; an edit of one service skips that."""
    global _gc_pauses, _gc_restore
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_restore = gc.isenabled()
            if _gc_restore and large:
                gc.collect(1)
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_restore:
                gc.enable()


def freeze_long_lived() -> None:
    """After a large change is committed, within quiet_gc: the running
    configuration lives until the next one, so later collections need not
    traverse it (gc.freeze: a collection of the million objects just made
    would stall the readers as one during the build would); it is freed by
    reference counting when replaced (its objects form no cycles)."""
    gc.freeze()


def release_slowly(parts: Sequence[list]) -> None:
    """Free the objects of some lists (each list a new one, the caller's
    last reference to them) a slice at a time on a thread of its own: freed
    at once, a million objects stall every other thread for some 50 ms.
    Given a replaced configuration's services, whoever drops the
    configuration last frees only its outer shell."""

    def release() -> None:
        for part in parts:
            while part:
                del part[-_RELEASE_SLICE:]
                time.sleep(0)           # let the other threads run

    threading.Thread(target=release, name="rplb-release", daemon=True).start()


# Services freed at a time by release_slowly.
_RELEASE_SLICE = 128
