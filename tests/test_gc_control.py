"""rplb.gc_control: no cyclic collection while a large change is built,
whatever nests, and replaced objects freed on a thread of their own."""

import gc
import threading
import time
import weakref

from rplb.gc_control import quiet_gc, release_slowly


def test_quiet_gc_nests_and_restores_what_it_found():
    assert gc.isenabled()
    with quiet_gc():
        assert not gc.isenabled()
        with quiet_gc(large=False):
            assert not gc.isenabled()
        assert not gc.isenabled()          # the outer block still builds
    assert gc.isenabled()
    gc.disable()
    try:
        with quiet_gc():
            pass
        assert not gc.isenabled()          # it was off before: it stays off
    finally:
        gc.enable()


def test_quiet_gc_restores_after_an_error():
    try:
        with quiet_gc():
            raise ValueError("a refused change")
    except ValueError:
        pass
    assert gc.isenabled()


def test_quiet_gc_from_two_threads():
    """The control socket and SIGHUP may change at once: collection comes
    back only when the last build ends."""
    inside, leave = threading.Event(), threading.Event()

    def build():
        with quiet_gc():
            inside.set()
            leave.wait(10)
    thread = threading.Thread(target=build)
    thread.start()
    inside.wait(10)
    with quiet_gc():
        pass
    assert not gc.isenabled()
    leave.set()
    thread.join(10)
    assert gc.isenabled()


class Item:
    pass


def test_release_slowly_frees_everything_eventually():
    items = [Item() for _ in range(1000)]
    refs = [weakref.ref(item) for item in items]
    release_slowly([items])
    del items
    deadline = time.monotonic() + 10
    while any(r() is not None for r in refs) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(r() is None for r in refs)
