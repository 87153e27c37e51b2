"""A window's status, computed from what the brain sees (pure: no I/O).

The reconciler writes it only when it differs from what is there, so a quiet window costs no
requests; conditions keep their lastTransitionTime until their status really changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from brain.core.lock_state import LockState
from brain.core.phase import Phase
from brain.core.planner import HoldReason, WindowPlan
from brain.core.window import (
    Condition,
    ConditionStatus,
    ConditionType,
    Counts,
    NodeStatus,
    WindowStatus,
    set_condition,
)

DONE_ENTRIES_SHOWN = 20
TRUE, FALSE = ConditionStatus.TRUE, ConditionStatus.FALSE


def invalid_status(
    previous: Sequence[Condition], generation: int, message: str, now: datetime
) -> WindowStatus:
    """The status of a window whose spec does not parse: Ready False, nothing else claimed."""
    conditions = set_condition(
        previous, ConditionType.READY, FALSE, "InvalidSpec", message, now, generation
    )
    return WindowStatus(observed_generation=generation, conditions=conditions)


def retrying_nodes(plan: WindowPlan, lock: LockState, now: datetime) -> dict[str, datetime]:
    """Flagged nodes resting until a retry (after an aborted drain), with when they may go.

    They still need their reboot, so they count as pending: a window with one is not done.
    (A node resting because it was rebooted at its current boot and is still flagged from
    before is handled: it is not counted.)
    """
    resting = {held.node for held in plan.held_back if held.reason is HoldReason.RESTING}
    retrying: dict[str, datetime] = {}
    for record in lock.windows.values():
        for name, until in record.retry_after.items():
            if name in resting and until > now:
                retrying[name] = max(until, retrying.get(name, until))
    return retrying


def degraded_status(
    previous: Mapping[str, Any],
    generation: int,
    reason: str,
    message: str,
    now: datetime,
) -> WindowStatus:
    """The brain cannot plan this window (`reason`: LockUnreadable, PlanFailed): Degraded, and
    Progressing False for the same reason. Counts and nodes stay as they were shown: nothing is
    known to have moved, and nothing of this window starts."""
    try:
        shown = WindowStatus.model_validate(previous)
    except ValueError:
        shown = WindowStatus()
    conditions = set_condition(
        shown.conditions, ConditionType.DEGRADED, TRUE, reason, message, now, generation
    )
    conditions = set_condition(
        conditions,
        ConditionType.PROGRESSING,
        FALSE,
        reason,
        "no node of this window starts until the brain can plan it again",
        now,
        generation,
    )
    return shown.model_copy(update={"observed_generation": generation, "conditions": conditions})


def window_status(
    plan: WindowPlan,
    lock: LockState,
    previous: Sequence[Condition],
    generation: int,
    now: datetime,
) -> WindowStatus:
    conditions = list(previous)

    def put(kind: ConditionType, status: ConditionStatus, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(conditions, kind, status, reason, message, now, generation)

    put(ConditionType.READY, TRUE, "Reconciled", "the spec is valid and the brain acts on it")
    if plan.suspended:
        put(ConditionType.WINDOW_OPEN, FALSE, "Suspended", "spec.suspend is true")
    elif plan.is_open:
        until = f" until {plan.open_until:%Y-%m-%dT%H:%M:%SZ}" if plan.open_until else ""
        put(ConditionType.WINDOW_OPEN, TRUE, "Open", f"the schedule is open{until}")
    else:
        when = f"; opens {plan.next_open:%Y-%m-%dT%H:%M:%SZ}" if plan.next_open else ""
        put(ConditionType.WINDOW_OPEN, FALSE, "Closed", f"the schedule is closed{when}")

    failed = list(plan.failed)
    active = [name for name in plan.in_maintenance if name not in failed]
    retrying = retrying_nodes(plan, lock, now)
    pending_count = len(plan.pending) + len(retrying)
    resting_text = "; ".join(
        f"{name} rests until {until:%Y-%m-%dT%H:%M:%SZ} (its drain was aborted or it was released)"
        for name, until in sorted(retrying.items())[:5]
    )
    if active:
        put(
            ConditionType.PROGRESSING,
            TRUE,
            "Rebooting",
            f"{len(active)} in maintenance ({', '.join(active[:5])}), {pending_count} pending",
        )
    elif plan.pending:
        reason = "Waiting" if (plan.is_open and not plan.suspended) else "WaitingForWindow"
        extra = f"; {resting_text}" if resting_text else ""
        put(ConditionType.PROGRESSING, FALSE, reason, f"{pending_count} pending{extra}")
    elif retrying:
        put(ConditionType.PROGRESSING, FALSE, "Resting", resting_text)
    elif failed:
        put(
            ConditionType.PROGRESSING,
            FALSE,
            "Paused",
            f"paused by failed node(s) {', '.join(failed[:5])}",
        )
    else:
        put(ConditionType.PROGRESSING, FALSE, "Idle", "no node needs a reboot")

    if plan.blocked_reason:
        put(ConditionType.BLOCKED, TRUE, "Blocked", plan.blocked_reason)
    else:
        put(ConditionType.BLOCKED, FALSE, "NotBlocked", "no blocker is active")

    if failed:
        messages = [f"{name}: {lock.nodes[name].message}" for name in failed if name in lock.nodes]
        put(
            ConditionType.DEGRADED,
            TRUE,
            "NodeFailed",
            "rollout paused until a person acts (pitstop retry|release NODE): "
            + "; ".join(messages),
        )
    else:
        put(ConditionType.DEGRADED, FALSE, "AsExpected", "no node failed")

    if plan.conflicts:
        described = ", ".join(
            f"{conflict.node} (also {', '.join(w for w in conflict.windows if w != plan.name)})"
            for conflict in plan.conflicts
        )
        put(
            ConditionType.CONFLICT,
            TRUE,
            "SamePriority",
            f"nodes matched by windows of equal priority are left alone: {described}",
        )
    else:
        put(ConditionType.CONFLICT, FALSE, "NoConflict", "no node is claimed at equal priority")

    nodes: list[NodeStatus] = []
    for name in plan.in_maintenance:
        lease = lock.nodes.get(name)
        if lease is not None:
            nodes.append(
                NodeStatus(
                    name=name,
                    phase=lease.phase,
                    since=lease.since,
                    message=lease.message,
                    boot_id_before=lease.boot_id_before,
                )
            )
    held = {item.node: item.message for item in plan.held_back}
    for pending in plan.pending:
        message = held.get(pending.name, f"batch {pending.batch}")
        nodes.append(
            NodeStatus(name=pending.name, phase=Phase.PENDING, since=pending.since, message=message)
        )
    outcomes = sorted(
        (entry for record in lock.windows.values() for entry in record.completed),
        key=lambda entry: entry.finished,
    )
    last_outcome = {entry.node: entry for entry in outcomes}
    for name in sorted(retrying):
        outcome = last_outcome.get(name)
        why = f"{outcome.result}: {outcome.message}; " if outcome is not None else ""
        since = outcome.finished if outcome is not None else None
        nodes.append(
            NodeStatus(name=name, phase=Phase.PENDING, since=since, message=why + held[name])
        )
    record = lock.windows.get(plan.name)
    done = 0
    if record is not None:
        listed = {entry.name for entry in nodes}
        succeeded = [entry for entry in record.completed if entry.result == "Rebooted"]
        done = len({entry.node for entry in succeeded})
        for entry in reversed(record.completed[-DONE_ENTRIES_SHOWN:]):
            if entry.node in listed:
                continue
            listed.add(entry.node)
            phase = Phase.DONE if entry.result == "Rebooted" else Phase.PENDING
            if phase == Phase.PENDING and entry.node not in plan.governed:
                continue
            nodes.append(
                NodeStatus(
                    name=entry.node,
                    phase=phase,
                    since=entry.finished,
                    message=f"{entry.result}: {entry.message}",
                )
            )
    nodes.sort(key=lambda entry: entry.name)
    return WindowStatus(
        observed_generation=generation,
        conditions=conditions,
        next_window_start=plan.next_open,
        next_window_end=plan.next_close,
        nodes=nodes,
        counts=Counts(
            governed=len(plan.governed),
            pending=pending_count,
            in_maintenance=len(plan.in_maintenance),
            done=done,
            failed=len(failed),
        ),
    )
