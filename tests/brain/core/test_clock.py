"""Saturating datetime arithmetic, and the planner on huge durations and far-future records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from brain.core.clock import EARLIEST, LATEST, plus
from brain.core.lock_state import CompletedReboot, LockState, WindowRecord
from brain.core.node_view import NodeView
from brain.core.planner import HoldReason, NamedWindow, make_plan
from brain.core.window import WindowSpecError, parse_window_spec
from pitstopctl.plan_report import ClusterSnapshot, preview, render

NOW = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)


def test_plus_adds_and_saturates_instead_of_overflowing() -> None:
    assert plus(NOW, timedelta(hours=1)) == NOW + timedelta(hours=1)
    assert plus(NOW, timedelta(hours=70_000_000)) == LATEST
    assert plus(LATEST, timedelta(seconds=1)) == LATEST
    assert plus(NOW, -timedelta(hours=70_000_000)) == EARLIEST
    naive = datetime(2025, 1, 1)
    assert plus(naive, timedelta(days=999_999_999)) == datetime.max


# A record near the end of the calendar: with the longest delay the spec allows, the next
# start lies past datetime.max (what a far-future record, or a window stored before durations
# were bounded, does to the planner).
FAR_FUTURE = datetime(9999, 12, 31, 20, 0, tzinfo=UTC)


def test_a_huge_delay_is_refused_by_the_spec_now() -> None:
    spec = {"reboot": {"delayBetweenNodes": "70000000h"}}
    with pytest.raises(WindowSpecError, match="delayBetweenNodes: must be from 0s to 168h"):
        parse_window_spec(spec, "huge")


def test_a_delay_past_the_calendar_holds_its_window_and_breaks_no_other() -> None:
    # Issue 24: delayBetweenNodes 70,000,000 h on a window that had finished a node made every
    # pass of every window fail with "OverflowError: date value out of range".
    huge = NamedWindow(
        "huge",
        parse_window_spec(
            {
                "nodeSelector": {"matchLabels": {"pool": "huge"}},
                "reboot": {"delayBetweenNodes": "168h"},
            },
            "huge",
        ),
    )
    other = NamedWindow(
        "other", parse_window_spec({"nodeSelector": {"matchLabels": {"pool": "other"}}}, "other")
    )
    since = NOW - timedelta(hours=1)
    nodes = [
        NodeView("h1", {"pool": "huge"}, reboot_required=True, reboot_required_since=since),
        NodeView("o1", {"pool": "other"}, reboot_required=True, reboot_required_since=since),
    ]
    lock = LockState(
        windows={
            "huge": WindowRecord(
                lastFinished=FAR_FUTURE,
                completed=[CompletedReboot(node="h0", finished=FAR_FUTURE, result="Rebooted")],
            )
        }
    )
    plan = make_plan([huge, other], nodes, lock, NOW)
    assert plan.errors == {}
    assert [start.node for start in plan.window("other").starts] == ["o1"]
    held = plan.window("huge").held_back
    assert [(h.node, h.reason) for h in held] == [("h1", HoldReason.DELAY_BETWEEN_NODES)]
    assert plan.window("huge").delay_until == LATEST


def test_pitstop_plan_shows_a_saturated_delay_in_a_zone_ahead_of_utc() -> None:
    spec = {
        "nodeSelector": {"matchLabels": {"pool": "huge"}},
        "reboot": {"delayBetweenNodes": "168h"},
        "schedule": {"timeZone": "Asia/Tokyo"},
    }
    window = {"metadata": {"name": "huge", "generation": 1}, "spec": spec}
    node = {
        "metadata": {"name": "h1", "labels": {"pool": "huge"}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    lock = LockState(windows={"huge": WindowRecord(lastFinished=FAR_FUTURE)})
    text = render(preview(ClusterSnapshot([window], [node], lock), NOW))
    assert "delayBetweenNodes until 9999-12-31T23:59:59Z" in text


def test_a_moment_written_in_the_lock_without_a_zone_is_read_as_utc() -> None:
    # A hand-edited record (no zone) must not make comparisons with the brain's clock raise.
    lock = LockState.from_json('{"windows": {"w": {"retryAfter": {"n1": "2025-06-04T12:10:00"}}}}')
    assert lock.windows["w"].retry_after["n1"] == NOW + timedelta(minutes=10)
    window = NamedWindow("w", parse_window_spec({}, "w"))
    flagged = NodeView("n1", reboot_required=True, reboot_required_since=NOW)
    plan = make_plan([window], [flagged], lock, NOW)
    assert [h.reason for h in plan.window("w").held_back] == [HoldReason.RESTING]
