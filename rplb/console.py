"""rplb-dpdk's stdout and stderr, written so that a reader who stops reading
never stops rplb.

A pipe nobody drains fills after 64 KiB, and then every write() to it
waits.  rplb's control plane logs every change it makes; if it wrote to
stderr itself, a stuck reader (a supervisor that stopped draining, a
terminal paused with Ctrl-S) would freeze the control socket, the signal
loop and, through DPDK's log stream, EAL's own threads.  So every stream
has a bounded queue and one writer thread: callers only append (never
wait); when the queue is full the new line is dropped and counted, and the
count is reported as soon as the stream moves again.

DPDK's log stream is redirected into a pipe of our own whose write end is
non-blocking (rplb.dataplane.log_to_fd): EAL's messages join the same
queue, in order with ours, and a message that does not fit is dropped and
counted by DPDK's side instead of blocking its thread.

Messages are single lines (journald stores one entry per line).  Under
systemd (JOURNAL_STREAM names our stderr) each line starts with its syslog
priority, ``<3>`` error, ``<4>`` warning, ``<6>`` info, which journald
strips and records, so ``journalctl -p warning -u rplb`` works.

A stream whose reader went away for good (EPIPE) is marked broken: its
further lines are discarded, and the owner is told once (``on_broken``).
"""

from __future__ import annotations

import collections
import errno
import os
import re
import select
import threading
import time
from typing import Callable, List, Optional

ERR, WARNING, NOTICE, INFO, DEBUG = 3, 4, 5, 6, 7

#: Lines a stream keeps waiting for its reader before it drops new ones.
DEFAULT_CAPACITY = 2000

_PRIORITY = re.compile(rb"^<([0-7])>")


def one_line(text: str) -> str:
    """A message as one line: its lines joined, blank ones left out."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def is_journal(fd: int) -> bool:
    """True when fd is the stream systemd connected to journald for us:
    systemd sets JOURNAL_STREAM to that stream's "device:inode"."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in value.split(":"))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


class Stream:
    """One output stream (a file descriptor) with a bounded queue and a
    writer thread.  put() never blocks; close() waits a bounded time for
    the queue to drain."""

    def __init__(self, fd: int, name: str, capacity: int = DEFAULT_CAPACITY,
                 priorities: bool = False, on_broken: Optional[Callable[[str], None]] = None):
        self.fd = fd
        self.name = name
        self.capacity = capacity
        self.priorities = priorities        # prefix lines with <N> for journald
        self.dropped = 0                    # lines dropped since the start
        self.broken: Optional[str] = None   # why the stream was given up
        self._on_broken = on_broken
        self._lines: collections.deque = collections.deque()
        self._unreported = 0                # dropped lines not yet reported
        self._lock = threading.Lock()
        self._closing = False
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._sources: List[_LogPipe] = []
        self._thread = threading.Thread(target=self._run, name=f"rplb-{name}", daemon=True)
        self._thread.start()

    # -- callers

    def put(self, text: str, priority: int = INFO) -> bool:
        """Queue text (a line, or a block of lines for stdout); False if it
        was dropped (queue full or stream broken).  Never blocks."""
        self._pump_sources()        # earlier DPDK messages go first
        with self._lock:
            queued = self._append(text, priority)
        self._wake()
        return queued

    def add_source(self, read_fd: int, dropped: Callable[[], int]) -> None:
        """Also write what arrives on read_fd (DPDK's log pipe, non-blocking):
        messages of the form b"<N>text".  dropped() counts the messages its
        writer could not put into the pipe."""
        self._sources.append(_LogPipe(read_fd, dropped))
        self._wake()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (waiting at most timeout seconds for a stuck
        reader), then stop the writer.  Idempotent."""
        self._pump_sources()
        with self._lock:
            self._closing = True
        self._wake()
        self._thread.join(timeout)

    # -- internals

    def _append(self, text: str, priority: int) -> bool:
        if self.broken is not None:
            return False
        if len(self._lines) >= self.capacity:
            self.dropped += 1
            self._unreported += 1
            return False
        self._lines.append((priority, text))
        return True

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass                    # a wake-up is already pending

    def _pump_sources(self) -> None:
        for source in list(self._sources):
            messages, lost, ended = source.read()
            if lost:
                messages.append((WARNING, f"rplb-dpdk: warning: {lost} DPDK log messages "
                                          f"were dropped: nobody read {self.name}"))
            if messages:
                with self._lock:
                    for priority, text in messages:
                        self._append(text, priority)
            if ended:
                self._sources.remove(source)

    def _take(self):
        with self._lock:
            lines = list(self._lines)
            self._lines.clear()
            unreported, self._unreported = self._unreported, 0
            return lines, unreported, self._closing

    def _run(self) -> None:
        while True:
            self._pump_sources()
            lines, unreported, closing = self._take()
            if unreported:
                lines.insert(0, (WARNING, f"rplb-dpdk: warning: {unreported} lines of "
                                 f"{self.name} were dropped: nobody read {self.name} "
                                 f"(at most {self.capacity} wait)"))
            if lines:
                self._write(lines)
                continue
            if closing:
                return
            watched = [self._wake_r] + [s.fd for s in self._sources]
            try:
                select.select(watched, [], [])
            except (OSError, ValueError):
                time.sleep(0.05)
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except (BlockingIOError, OSError):
                pass

    def _write(self, lines) -> None:
        if self.broken is not None:
            return
        text = "".join((f"<{priority}>" if self.priorities else "") + line + "\n"
                       for priority, line in lines)
        data = text.encode(errors="replace")
        while data:
            try:
                written = os.write(self.fd, data)
            except InterruptedError:
                continue
            except BlockingIOError:
                select.select([], [self.fd], [])
                continue
            except OSError as err:
                self._give_up(err)
                return
            data = data[written:]

    def _give_up(self, err: OSError) -> None:
        reason = ("its reader went away (broken pipe)" if err.errno == errno.EPIPE
                  else os.strerror(err.errno or errno.EIO))
        with self._lock:
            self.broken = reason
            self._lines.clear()
        if self._on_broken is not None:
            self._on_broken(reason)


class _LogPipe:
    """The read end of DPDK's log pipe: messages b"<N>text...", one write()
    each, possibly several lines long."""

    def __init__(self, fd: int, dropped: Callable[[], int]):
        self.fd = fd
        self._dropped = dropped
        self._partial = b""
        self._priority = INFO
        self._lock = threading.Lock()
        self._reported = 0                  # drops already reported

    def read(self):
        """(messages, lost, ended): (priority, line) of every complete line
        available now, how many messages DPDK dropped since the last call,
        and whether the pipe was closed."""
        with self._lock:
            chunks, ended = [], False
            while True:
                try:
                    chunk = os.read(self.fd, 65536)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    ended = True
                    break
                if not chunk:
                    ended = True
                    break
                chunks.append(chunk)
            dropped = self._dropped()
            lost, self._reported = dropped - self._reported, dropped
            data = self._partial + b"".join(chunks)
            *complete, self._partial = data.split(b"\n")
            if ended and self._partial:
                complete.append(self._partial)
                self._partial = b""
            messages = []
            for raw in complete:
                match = _PRIORITY.match(raw)
                if match:
                    self._priority = int(match.group(1))
                    raw = raw[match.end():]
                text = raw.decode(errors="replace").rstrip()
                if text:
                    messages.append((self._priority, text))
            return messages, lost, ended
