"""The sentinel: reason sanitising, reading safely, and the watcher seeing changes within 1 s."""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from detector.sentinel import (
    SentinelState,
    SentinelWatcher,
    read_regular_file,
    read_state,
    sanitise,
)
from pitstop import contract


def test_sanitise_joins_lines_and_drops_control_characters() -> None:
    assert sanitise("  kernel update \n\n\x1b[31mred\x07\t tab\r\n") == "kernel update; [31mred tab"


def test_sanitise_limits_to_1_kib_without_splitting_characters() -> None:
    text = "é" * 2000  # 2 bytes each
    result = sanitise(text)
    encoded = result.encode("utf-8")
    assert len(encoded) <= contract.REBOOT_REASON_MAX_BYTES
    assert result.endswith("\u2026")
    assert set(result[:-1]) == {"é"}
    assert sanitise("short") == "short"


def test_reason_prefers_the_ubuntu_package_list(tmp_path: Path) -> None:
    sentinel = tmp_path / "reboot-required"
    sentinel.write_text("*** System restart required ***\n")
    assert read_state(str(sentinel)) == SentinelState(True, "*** System restart required ***")
    (tmp_path / "reboot-required.pkgs").write_text("linux-base\nlinux-image-6.8\nlinux-base\n")
    assert read_state(str(sentinel)) == SentinelState(True, "linux-base, linux-image-6.8")


def test_absent_and_empty(tmp_path: Path) -> None:
    sentinel = tmp_path / "reboot-required"
    assert read_state(str(sentinel)) == SentinelState(False)
    sentinel.touch()
    assert read_state(str(sentinel)) == SentinelState(True, "")


def test_a_fifo_at_the_path_is_present_but_never_read(tmp_path: Path) -> None:
    fifo = tmp_path / "reboot-required"
    os.mkfifo(fifo)
    started = time.monotonic()
    assert read_regular_file(str(fifo)) is None
    assert read_state(str(fifo)) == SentinelState(True, "")
    assert time.monotonic() - started < 1


def test_read_is_bounded(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * 200_000)
    assert len(read_regular_file(str(big), limit=1000) or "") == 1000


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[Path, queue.Queue[SentinelState]]]:
    """A watcher on tmp_path/reboot-required with a poll far too slow to help the test."""
    states: queue.Queue[SentinelState] = queue.Queue()
    watcher = SentinelWatcher(str(tmp_path / "reboot-required"), 3600, states.put)
    watcher.start()
    assert states.get(timeout=1) == SentinelState(False)
    yield tmp_path / "reboot-required", states
    watcher.stop()


def next_state(states: queue.Queue[SentinelState], started: float) -> SentinelState:
    state = states.get(timeout=1)
    assert time.monotonic() - started < 1.0
    return state


def test_create_write_remove_seen_within_1s(
    watched: tuple[Path, queue.Queue[SentinelState]],
) -> None:
    sentinel, states = watched
    started = time.monotonic()
    sentinel.write_text("new kernel\n")
    assert next_state(states, started) == SentinelState(True, "new kernel")
    started = time.monotonic()
    sentinel.unlink()
    assert next_state(states, started) == SentinelState(False)


def test_rename_replace_and_rename_away(
    watched: tuple[Path, queue.Queue[SentinelState]],
) -> None:
    sentinel, states = watched
    staging = sentinel.with_name(".staging")
    staging.write_text("first")
    started = time.monotonic()
    staging.rename(sentinel)
    assert next_state(states, started) == SentinelState(True, "first")
    staging.write_text("second")
    started = time.monotonic()
    staging.replace(sentinel)
    assert next_state(states, started) == SentinelState(True, "second")
    started = time.monotonic()
    sentinel.rename(sentinel.with_name("elsewhere"))
    assert next_state(states, started) == SentinelState(False)


def test_package_list_change_is_one_more_report(
    watched: tuple[Path, queue.Queue[SentinelState]],
) -> None:
    sentinel, states = watched
    sentinel.write_text("x")
    assert states.get(timeout=1).present
    started = time.monotonic()
    sentinel.with_name("reboot-required.pkgs").write_text("openssl\n")
    assert next_state(states, started) == SentinelState(True, "openssl")
    with pytest.raises(queue.Empty):
        states.get(timeout=0.5)  # nothing else changed: no further report


def test_directory_appearing_later_is_picked_up_by_the_poll(tmp_path: Path) -> None:
    states: queue.Queue[SentinelState] = queue.Queue()
    directory = tmp_path / "later"
    watcher = SentinelWatcher(str(directory / "reboot-required"), 1, states.put)
    watcher.start()
    try:
        assert states.get(timeout=1) == SentinelState(False)
        # Written beside and renamed in: a poll between the file's creation and its write
        # would report it present with no reason first (a real, later-corrected state, but
        # not the one this test is about).
        staged = tmp_path / "staged"
        staged.write_text("late")
        directory.mkdir()
        staged.rename(directory / "reboot-required")
        assert states.get(timeout=3) == SentinelState(True, "late")
        # Now inotify watches the directory: removal is seen well within 1 s.
        time.sleep(1.2)
        started = time.monotonic()
        (directory / "reboot-required").unlink()
        assert next_state(states, started) == SentinelState(False)
    finally:
        watcher.stop()


def test_watcher_stops_promptly(tmp_path: Path) -> None:
    watcher = SentinelWatcher(str(tmp_path / "f"), 3600, lambda state: None)
    watcher.start()
    started = time.monotonic()
    watcher.stop()
    assert time.monotonic() - started < 1
    assert not watcher._thread.is_alive()
