"""A window's status from a plan: counts and conditions that tell the truth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from brain.core.lock_state import CompletedReboot, LockState, NodeLease, WindowRecord
from brain.core.node_view import NodeView
from brain.core.phase import Phase
from brain.core.planner import NamedWindow, make_plan
from brain.core.status import degraded_status, window_status
from brain.core.window import ConditionType, parse_window_spec

NOW = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)


def condition(status: object, kind: ConditionType) -> tuple[str, str, str]:
    for item in status.conditions:  # type: ignore[attr-defined]
        if item.type == kind:
            return str(item.status), item.reason, item.message
    raise AssertionError(kind)


def test_a_node_resting_after_an_aborted_drain_is_pending_and_the_window_not_idle() -> None:
    # Issue 16 item 3: the node rested before a retry, yet the status said PENDING 0 and
    # "Idle: no node needs a reboot", and a RolloutComplete Event was posted.
    window = NamedWindow("w", parse_window_spec({}, "w"))
    flagged = NodeView("n1", reboot_required=True, reboot_required_since=NOW - timedelta(hours=1))
    retry_at = NOW + timedelta(minutes=10)
    aborted = CompletedReboot(
        node="n1", finished=NOW, result="DrainAborted", message="bare pod default/lonely"
    )
    lock = LockState(windows={"w": WindowRecord(retryAfter={"n1": retry_at}, completed=[aborted])})
    plan = make_plan([window], [flagged], lock, NOW).window("w")
    status = window_status(plan, lock, [], 1, NOW)
    assert status.counts.pending == 1
    progressing = condition(status, ConditionType.PROGRESSING)
    assert progressing[:2] == ("False", "Resting")
    assert "n1 rests until 2025-06-04T12:10:00Z" in progressing[2]
    [entry] = status.nodes
    assert entry.phase == Phase.PENDING and "bare pod default/lonely" in entry.message
    # Once its retry time has passed it is simply pending again (and may start).
    later = NOW + timedelta(minutes=11)
    plan = make_plan([window], [flagged], lock, later).window("w")
    assert window_status(plan, lock, [], 1, later).counts.pending == 1


def test_a_node_still_flagged_at_the_boot_it_was_rebooted_to_is_handled() -> None:
    window = NamedWindow("w", parse_window_spec({}, "w"))
    stale = NodeView(
        "n1",
        reboot_required=True,
        reboot_required_since=NOW - timedelta(hours=1),
        boot_id="b2",
    )
    done = CompletedReboot(node="n1", finished=NOW, result="Rebooted", bootID="b2")
    lock = LockState(windows={"w": WindowRecord(completed=[done])})
    plan = make_plan([window], [stale], lock, NOW).window("w")
    status = window_status(plan, lock, [], 1, NOW)
    assert status.counts.pending == 0
    assert condition(status, ConditionType.PROGRESSING)[1] == "Idle"


def test_a_window_paused_by_a_failed_node_is_not_idle() -> None:
    window = NamedWindow("w", parse_window_spec({}, "w"))
    lock = LockState(
        nodes={"n1": NodeLease(window="w", phase=Phase.FAILED, since=NOW, message="lost")}
    )
    plan = make_plan([window], [NodeView("n1")], lock, NOW).window("w")
    progressing = condition(window_status(plan, lock, [], 1, NOW), ConditionType.PROGRESSING)
    assert progressing[:2] == ("False", "Paused")


def test_degraded_status_keeps_what_was_shown_and_claims_no_progress() -> None:
    before = {
        "counts": {"pending": 2, "inMaintenance": 3},
        "conditions": [
            {
                "type": "Progressing",
                "status": "True",
                "reason": "Rebooting",
                "message": "3 in maintenance",
                "lastTransitionTime": "2025-06-04T11:00:00Z",
            }
        ],
    }
    status = degraded_status(before, 2, "LockUnreadable", "lock x does not parse", NOW)
    assert status.counts.in_maintenance == 3 and status.observed_generation == 2
    assert condition(status, ConditionType.DEGRADED) == (
        "True",
        "LockUnreadable",
        "lock x does not parse",
    )
    assert condition(status, ConditionType.PROGRESSING)[:2] == ("False", "LockUnreadable")
