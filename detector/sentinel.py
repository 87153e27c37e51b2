"""Watching the sentinel file: inotify on its directory (through ctypes), a slow poll as backup.

The file may be created, written, replaced by rename or removed, and the directory itself may
appear later (a mount not ready yet): watching the directory, not the file, sees all of these.
The watcher never reads in a loop: it blocks in poll(2) until inotify has news or the safety-net
interval passes, then reports the file's state (present or not, and its reason) when it changed.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import select
import stat
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pitstop import contract

LOG = logging.getLogger("pitstop.detector.sentinel")

IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_MODIFY = 0x00000002
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
WATCH_MASK = (
    IN_CREATE
    | IN_DELETE
    | IN_MOVED_TO
    | IN_MOVED_FROM
    | IN_CLOSE_WRITE
    | IN_ATTRIB
    | IN_MODIFY
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
)
_EVENT_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)

# Read at most this much of a file: the annotation keeps 1 KiB, and a huge or endless file
# placed at the sentinel path must not cost memory.
READ_LIMIT_BYTES = 64 * 1024
PACKAGES_SUFFIX = ".pkgs"
# Events arriving together (create, write, close) are folded into one report this long.
SETTLE_SECONDS = 0.1
MAX_SETTLE_SECONDS = 0.4


@dataclass(frozen=True)
class SentinelState:
    """What the file says: whether a reboot is required, and why (sanitised, may be empty)."""

    present: bool
    reason: str = ""


def sanitise(text: str, separator: str = "; ") -> str:
    """One line of printable text, at most REBOOT_REASON_MAX_BYTES of UTF-8.

    Lines are stripped and joined with `separator`, control and other unprintable characters
    become spaces, runs of spaces shrink to one; a cut is marked with an ellipsis and never
    splits a character.
    """
    lines = [line.strip() for line in text.splitlines()]
    joined = separator.join(line for line in lines if line)
    printable = "".join(character if character.isprintable() else " " for character in joined)
    collapsed = " ".join(printable.split())
    return _truncate_utf8(collapsed, contract.REBOOT_REASON_MAX_BYTES)


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    marker = "\u2026"
    room = limit - len(marker.encode("utf-8"))
    return encoded[:room].decode("utf-8", errors="ignore") + marker


def read_regular_file(path: str, limit: int = READ_LIMIT_BYTES) -> str | None:
    """The text of a regular file (first `limit` bytes), or None if it is absent or not regular.

    Opened non-blocking and checked with fstat, so a FIFO or device planted at the path can
    neither block the detector nor be read.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        chunks: list[bytes] = []
        remaining = limit
        while remaining > 0:
            chunk = os.read(descriptor, remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks).decode("utf-8", errors="replace")
    except OSError:
        return None
    finally:
        os.close(descriptor)


def read_state(sentinel_path: str) -> SentinelState:
    """The sentinel's state. The reason is Ubuntu's package list from `<sentinel>.pkgs` when
    that file exists and names packages (the sentinel itself then only says "*** System restart
    required ***"), otherwise the sentinel's own text (what a custom detector writes)."""
    if not os.path.lexists(sentinel_path):
        return SentinelState(present=False)
    packages_text = read_regular_file(sentinel_path + PACKAGES_SUFFIX)
    if packages_text:
        unique = list(dict.fromkeys(line.strip() for line in packages_text.splitlines()))
        reason = sanitise("\n".join(name for name in unique if name), separator=", ")
        if reason:
            return SentinelState(present=True, reason=reason)
    own_text = read_regular_file(sentinel_path)
    return SentinelState(present=True, reason=sanitise(own_text or ""))


class Inotify:
    """A minimal inotify handle over libc through ctypes (no third-party package)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._add_watch = libc.inotify_add_watch
        self._add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._add_watch.restype = ctypes.c_int
        init = libc.inotify_init1
        init.argtypes = [ctypes.c_int]
        init.restype = ctypes.c_int
        descriptor = init(IN_NONBLOCK | IN_CLOEXEC)
        if descriptor < 0:
            number = ctypes.get_errno()
            raise OSError(number, f"inotify_init1: {os.strerror(number)}")
        self.descriptor: int = descriptor

    def add_watch(self, path: str, mask: int) -> int:
        watch = int(self._add_watch(self.descriptor, os.fsencode(path), mask))
        if watch < 0:
            number = ctypes.get_errno()
            raise OSError(number, f"inotify_add_watch {path}: {os.strerror(number)}")
        return watch

    def read_events(self) -> list[tuple[int, int, str]]:
        """All queued events as (watch, mask, name); empty when none are queued."""
        events: list[tuple[int, int, str]] = []
        while True:
            try:
                buffer = os.read(self.descriptor, 64 * 1024)
            except BlockingIOError:
                return events
            except OSError as error:
                if error.errno == errno.EINTR:
                    continue
                raise
            if not buffer:
                return events
            offset = 0
            while offset + _EVENT_HEADER.size <= len(buffer):
                watch, mask, _cookie, length = _EVENT_HEADER.unpack_from(buffer, offset)
                start = offset + _EVENT_HEADER.size
                name = buffer[start : start + length].split(b"\0", 1)[0]
                events.append((watch, mask, os.fsdecode(name)))
                offset = start + length

    def close(self) -> None:
        os.close(self.descriptor)


class SentinelWatcher:
    """Calls `on_change(state)` from its own thread whenever the sentinel's state changes.

    The first state is reported once at start. Without inotify (or without the directory) it
    falls back to the poll alone and keeps trying to set the watch up at each poll.
    """

    def __init__(
        self,
        sentinel_path: str,
        poll_interval_seconds: float,
        on_change: Callable[[SentinelState], None],
    ) -> None:
        self.sentinel_path = sentinel_path
        self.directory = os.path.dirname(sentinel_path) or "/"
        self.names = {
            os.path.basename(sentinel_path),
            os.path.basename(sentinel_path) + PACKAGES_SUFFIX,
        }
        self.poll_interval_seconds = poll_interval_seconds
        self.on_change = on_change
        self._stop_read, self._stop_write = os.pipe()
        self._inotify: Inotify | None = None
        self._watch: int | None = None
        self._last: SentinelState | None = None
        self._thread = threading.Thread(target=self._run, name="sentinel", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        os.write(self._stop_write, b"x")
        self._thread.join(timeout=2)

    def check(self) -> None:
        """Read the file and report if its state changed since the last report."""
        state = read_state(self.sentinel_path)
        if state != self._last:
            self._last = state
            LOG.info(
                "sentinel %s: present=%s reason=%r", self.sentinel_path, state.present, state.reason
            )
            self.on_change(state)

    def _ensure_watch(self) -> None:
        try:
            if self._inotify is None:
                self._inotify = Inotify()
            if self._watch is None:
                self._watch = self._inotify.add_watch(self.directory, WATCH_MASK)
                LOG.debug("watching directory %s", self.directory)
        except OSError as error:
            LOG.warning(
                "cannot watch %s (%s); polling every %ss",
                self.directory,
                error,
                self.poll_interval_seconds,
            )

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._stop_read, select.POLLIN)
        self._ensure_watch()
        if self._inotify is not None:
            poller.register(self._inotify.descriptor, select.POLLIN)
        self.check()
        while True:
            if self._watch is None:
                self._ensure_watch()
                self.check()  # the directory may have appeared meanwhile
            ready = poller.poll(self.poll_interval_seconds * 1000)
            descriptors = {descriptor for descriptor, _ in ready}
            if self._stop_read in descriptors:
                return
            if not ready:
                self.check()  # the safety net
                continue
            if self._inotify is not None and self._relevant(self._inotify.read_events()):
                if not self._settle(poller):
                    return
                self.check()

    def _settle(self, poller: select.poll) -> bool:
        """Fold the rest of a burst (create, write, close; two renames) into one report.

        Waits until events pause for SETTLE_SECONDS, at most MAX_SETTLE_SECONDS in all, so a
        file written without pause is still reported in time. False means stop was asked.
        """
        assert self._inotify is not None
        deadline = time.monotonic() + MAX_SETTLE_SECONDS
        while (remaining := deadline - time.monotonic()) > 0:
            ready = poller.poll(min(SETTLE_SECONDS, remaining) * 1000)
            if not ready:
                break
            if self._stop_read in {descriptor for descriptor, _ in ready}:
                return False
            self._relevant(self._inotify.read_events())
        return True

    def _relevant(self, events: list[tuple[int, int, str]]) -> bool:
        relevant = False
        for _watch, mask, name in events:
            if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
                LOG.warning(
                    "directory %s went away; watching again when it is back", self.directory
                )
                self._watch = None
                relevant = True
            elif mask & IN_Q_OVERFLOW or name in self.names:
                relevant = True
        return relevant
