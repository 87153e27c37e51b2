"""A window's status from a plan: counts and conditions that tell the truth."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from brain.core.lock_state import (
    CompletedReboot,
    LockState,
    NodeLease,
    WindowRecord,
    continues_rollout,
)
from brain.core.node_view import NodeView
from brain.core.phase import Phase
from brain.core.planner import NamedWindow, make_plan
from brain.core.status import (
    MAINTENANCE_NODES_SHOWN,
    PENDING_NODES_SHOWN,
    degraded_status,
    window_status,
)
from brain.core.window import (
    MAX_NODE_MESSAGE_LENGTH,
    ConditionType,
    WindowStatus,
    parse_window_spec,
)

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


def flagged_nodes(count: int) -> list[NodeView]:
    return [
        NodeView(
            f"n{index:05d}",
            reboot_required=True,
            reboot_required_since=NOW - timedelta(hours=2) + timedelta(seconds=index),
        )
        for index in range(count)
    ]


def test_status_nodes_stay_bounded_at_any_scale_and_the_counts_stay_true() -> None:
    """Issue 18: 5,000 pending nodes made a 1.25 MB window object (etcd refuses 1.5 MB)."""
    window = NamedWindow("w", parse_window_spec({"maxUnavailable": 150}, "w"))
    nodes = flagged_nodes(5000)
    leases = {
        node.name: NodeLease(window="w", phase=Phase.DRAINING, since=NOW, message="draining")
        for node in nodes[:150]
    }
    leases[nodes[0].name] = NodeLease(window="w", phase=Phase.FAILED, since=NOW, message="lost")
    lock = LockState(nodes=leases, windows={"w": WindowRecord(rolloutStart=NOW, rolloutDone=7)})
    plan = make_plan([window], nodes, lock, NOW).window("w")
    status = window_status(plan, lock, [], 1, NOW)
    assert status.counts.pending == 4850 and status.counts.in_maintenance == 150
    assert status.counts.failed == 1 and status.counts.done == 7
    phases = [entry.phase for entry in status.nodes]
    assert phases.count(Phase.PENDING) == PENDING_NODES_SHOWN
    assert phases.count(Phase.DRAINING) == 149 and phases.count(Phase.FAILED) == 1
    assert status.nodes_not_listed == 4850 - PENDING_NODES_SHOWN
    # The next ones to start are the ones listed (oldest flag first).
    listed_pending = {entry.name for entry in status.nodes if entry.phase == Phase.PENDING}
    assert listed_pending == {node.name for node in nodes[150 : 150 + PENDING_NODES_SHOWN]}
    assert status.rollout_start == NOW
    size = len(json.dumps(status.to_api()))
    assert size < 50_000, size
    # And what is written is what the CRD accepts (same limits as pydantic's).
    assert WindowStatus.model_validate(status.to_api()) == status


def test_even_all_nodes_in_maintenance_make_a_bounded_list() -> None:
    window = NamedWindow("w", parse_window_spec({"maxUnavailable": "100%"}, "w"))
    nodes = flagged_nodes(1000)
    long_message = "refused by PodDisruptionBudget " * 100
    leases = {
        node.name: NodeLease(window="w", phase=Phase.FAILED, since=NOW, message=long_message)
        for node in nodes
    }
    lock = LockState(nodes=leases)
    plan = make_plan([window], nodes, lock, NOW).window("w")
    status = window_status(plan, lock, [], 1, NOW)
    assert len(status.nodes) == MAINTENANCE_NODES_SHOWN
    assert status.nodes_not_listed == 1000 - MAINTENANCE_NODES_SHOWN
    assert all(len(entry.message) <= MAX_NODE_MESSAGE_LENGTH for entry in status.nodes)
    degraded = condition(status, ConditionType.DEGRADED)[2]
    assert "and 995 more (pitstop plan lists them)" in degraded and len(degraded) < 10_000
    assert len(json.dumps(status.to_api())) < 500_000
    WindowStatus.model_validate(status.to_api())


def rebooted(node: str, finished: datetime) -> CompletedReboot:
    return CompletedReboot(node=node, finished=finished, result="Rebooted", bootID="b2")


def test_done_counts_every_reboot_of_the_rollout_not_the_history() -> None:
    """250 reboots showed done: 50 (the lock keeps only the last 50 outcomes)."""
    record = WindowRecord()
    record.admitted(NOW, continuing=False)
    for index in range(250):
        record.record(rebooted(f"n{index}", NOW + timedelta(seconds=index)))
    record.record(CompletedReboot(node="x", finished=NOW, result="DrainAborted"))
    assert len(record.completed) == 50 and record.rollout_done == 250
    # Kept in the lock: a restarted brain reads the same count.
    lock = LockState(windows={"w": record})
    again = LockState.from_json(lock.to_json())
    assert again.windows["w"].rollout_done == 250 and again.windows["w"].rollout_start == NOW
    window = NamedWindow("w", parse_window_spec({}, "w"))
    plan = make_plan([window], [NodeView("n0", boot_id="b2")], again, NOW).window("w")
    assert window_status(plan, again, [], 1, NOW).counts.done == 250


def test_a_rollout_continues_until_the_window_was_idle() -> None:
    start = NOW - timedelta(hours=3)
    finished = NOW - timedelta(hours=1)

    def state(**record: object) -> LockState:
        base: dict[str, object] = {"rolloutStart": start, "rolloutDone": 4}
        base.update(record)
        return LockState(windows={"w": WindowRecord.model_validate(base)})

    def lease() -> NodeLease:
        return NodeLease(window="w", phase=Phase.DRAINING, since=NOW)

    old_flag = [finished - timedelta(minutes=5)]  # waited through the last finish
    new_flag = [finished + timedelta(minutes=5)]  # flagged after it: the window was idle
    # Never started, or started before this brain kept rollouts: a new one.
    assert not continues_rollout(LockState(), "w", old_flag, NOW)
    # A node of the window still in the lock: the rollout goes on.
    busy = state(lastFinished=finished)
    busy.nodes["a"] = lease()
    assert continues_rollout(busy, "w", new_flag, NOW)
    # Another window's lease does not count.
    other = state(lastFinished=finished)
    other.nodes["a"] = NodeLease(window="v", phase=Phase.DRAINING, since=NOW)
    assert not continues_rollout(other, "w", new_flag, NOW)
    # Nothing in the lock, but a node waited through the last finish (a closed window, a delay
    # between nodes): the same rollout.
    assert continues_rollout(state(lastFinished=finished), "w", new_flag + old_flag, NOW)
    # A node resting until a retry: the window was not idle either.
    resting = state(lastFinished=finished, retryAfter={"r": NOW + timedelta(minutes=1)})
    assert continues_rollout(resting, "w", new_flag, NOW)
    # Every waiting node flagged after the last finish (or when unknown): a new rollout.
    assert not continues_rollout(state(lastFinished=finished), "w", [*new_flag, None], NOW)
    # ... whose count starts again at zero.
    record = state(lastFinished=finished).windows["w"]
    record.admitted(NOW, continuing=False)
    assert (record.rollout_start, record.rollout_done) == (NOW, 0)
    record.record(rebooted("n1", NOW))
    record.admitted(NOW + timedelta(minutes=1), continuing=True)
    assert (record.rollout_start, record.rollout_done) == (NOW, 1)


def test_condition_messages_stay_bounded_with_many_conflicts() -> None:
    first = NamedWindow("w", parse_window_spec({}, "w"))
    second = NamedWindow("v", parse_window_spec({}, "v"))
    nodes = flagged_nodes(2000)
    plan = make_plan([first, second], nodes, LockState(), NOW).window("w")
    message = condition(window_status(plan, LockState(), [], 1, NOW), ConditionType.CONFLICT)[2]
    assert message.endswith("and 1995 more") and len(message) < 1000


def test_degraded_status_keeps_the_counts_of_an_older_unbounded_status() -> None:
    before = {
        "counts": {"pending": 5000, "inMaintenance": 3},
        "nodes": [{"name": f"n{index}", "phase": "Pending"} for index in range(5000)],
    }
    status = degraded_status(before, 2, "LockUnreadable", "lock x does not parse", NOW)
    assert status.counts.pending == 5000 and status.nodes == []
