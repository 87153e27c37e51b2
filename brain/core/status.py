"""A window's status, computed from what the brain sees (pure: no I/O).

The reconciler writes it only when it differs from what is there, so a quiet window costs no
requests; conditions keep their lastTransitionTime until their status really changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from brain.core.lock_state import REBOOTED, LockState
from brain.core.phase import Phase
from brain.core.planner import HoldReason, WindowPlan
from brain.core.window import (
    MAX_CONDITION_MESSAGE_LENGTH,
    MAX_NODE_MESSAGE_LENGTH,
    MAX_STATUS_NODES,
    Condition,
    ConditionStatus,
    ConditionType,
    Counts,
    NodeStatus,
    WindowStatus,
    set_condition,
)

# What status.nodes lists at most (see listed_nodes); far below the CRD's MAX_STATUS_NODES.
MAINTENANCE_NODES_SHOWN = 200
PENDING_NODES_SHOWN = 20
RESTING_NODES_SHOWN = 10
DONE_ENTRIES_SHOWN = 20
# Nodes named in a condition's message at most (failed ones, conflicts).
FAILED_MESSAGES_SHOWN = 5
assert (
    MAINTENANCE_NODES_SHOWN + PENDING_NODES_SHOWN + RESTING_NODES_SHOWN + DONE_ENTRIES_SHOWN
    <= MAX_STATUS_NODES
)
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
        try:  # say, an older brain's unbounded node list: the counts are still worth keeping
            shown = WindowStatus.model_validate({**previous, "nodes": []})
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
        messages = [
            f"{name}: {_short(lock.nodes[name].message)}"
            for name in failed[:FAILED_MESSAGES_SHOWN]
            if name in lock.nodes
        ]
        more = len(failed) - FAILED_MESSAGES_SHOWN
        if more > 0:
            messages.append(f"and {more} more (pitstop plan lists them)")
        put(
            ConditionType.DEGRADED,
            TRUE,
            "NodeFailed",
            _short(
                "rollout paused until a person acts (pitstop retry|release NODE): "
                + "; ".join(messages),
                MAX_CONDITION_MESSAGE_LENGTH,
            ),
        )
    else:
        put(ConditionType.DEGRADED, FALSE, "AsExpected", "no node failed")

    if plan.conflicts:
        described = ", ".join(
            f"{conflict.node} (also {', '.join(w for w in conflict.windows if w != plan.name)})"
            for conflict in plan.conflicts[:FAILED_MESSAGES_SHOWN]
        )
        if len(plan.conflicts) > FAILED_MESSAGES_SHOWN:
            described += f" and {len(plan.conflicts) - FAILED_MESSAGES_SHOWN} more"
        put(
            ConditionType.CONFLICT,
            TRUE,
            "SamePriority",
            f"nodes matched by windows of equal priority are left alone: {described}",
        )
    else:
        put(ConditionType.CONFLICT, FALSE, "NoConflict", "no node is claimed at equal priority")

    nodes, not_listed = listed_nodes(plan, lock, retrying)
    record = lock.windows.get(plan.name)
    return WindowStatus(
        observed_generation=generation,
        conditions=conditions,
        next_window_start=plan.next_open,
        next_window_end=plan.next_close,
        nodes=nodes,
        nodes_not_listed=not_listed,
        rollout_start=record.rollout_start if record is not None else None,
        counts=Counts(
            governed=len(plan.governed),
            pending=pending_count,
            in_maintenance=len(plan.in_maintenance),
            done=record.rollout_done if record is not None else 0,
            failed=len(failed),
        ),
    )


def _short(message: str, limit: int = MAX_NODE_MESSAGE_LENGTH) -> str:
    return message if len(message) <= limit else message[: limit - 1] + "…"


def listed_nodes(
    plan: WindowPlan, lock: LockState, retrying: Mapping[str, datetime]
) -> tuple[list[NodeStatus], int]:
    """The nodes `status.nodes` shows, and how many waiting or in maintenance it leaves out.

    Bounded whatever the cluster's size (the window object must stay far below etcd's object
    limit): the failed nodes and the others in maintenance (at most MAINTENANCE_NODES_SHOWN),
    the next PENDING_NODES_SHOWN pending ones in start order, at most RESTING_NODES_SHOWN
    resting before a retry, and the last DONE_ENTRIES_SHOWN outcomes. `pitstop plan` lists
    every node.
    """
    failed = set(plan.failed)
    maintenance = sorted(plan.in_maintenance, key=lambda name: (name not in failed, name))
    shown_maintenance = [name for name in maintenance if name in lock.nodes]
    not_listed = len(shown_maintenance[MAINTENANCE_NODES_SHOWN:])
    nodes: list[NodeStatus] = []
    for name in shown_maintenance[:MAINTENANCE_NODES_SHOWN]:
        lease = lock.nodes[name]
        nodes.append(
            NodeStatus(
                name=name,
                phase=lease.phase,
                since=lease.since,
                message=_short(lease.message),
                boot_id_before=lease.boot_id_before,
            )
        )
    held = {item.node: item.message for item in plan.held_back}
    for pending in plan.pending[:PENDING_NODES_SHOWN]:
        message = held.get(pending.name, f"batch {pending.batch}")
        nodes.append(
            NodeStatus(
                name=pending.name,
                phase=Phase.PENDING,
                since=pending.since,
                message=_short(message),
            )
        )
    not_listed += len(plan.pending[PENDING_NODES_SHOWN:])
    outcomes = sorted(
        (entry for record in lock.windows.values() for entry in record.completed),
        key=lambda entry: entry.finished,
    )
    last_outcome = {entry.node: entry for entry in outcomes}
    resting = sorted(retrying)
    for name in resting[:RESTING_NODES_SHOWN]:
        outcome = last_outcome.get(name)
        why = f"{outcome.result}: {outcome.message}; " if outcome is not None else ""
        since = outcome.finished if outcome is not None else None
        nodes.append(
            NodeStatus(
                name=name, phase=Phase.PENDING, since=since, message=_short(why + held[name])
            )
        )
    not_listed += len(resting[RESTING_NODES_SHOWN:])
    record = lock.windows.get(plan.name)
    if record is not None:
        listed = {entry.name for entry in nodes} | set(maintenance) | set(retrying)
        listed |= {pending.name for pending in plan.pending}
        for entry in reversed(record.completed[-DONE_ENTRIES_SHOWN:]):
            if entry.node in listed:
                continue
            listed.add(entry.node)
            phase = Phase.DONE if entry.result == REBOOTED else Phase.PENDING
            if phase == Phase.PENDING and entry.node not in plan.governed:
                continue
            nodes.append(
                NodeStatus(
                    name=entry.node,
                    phase=phase,
                    since=entry.finished,
                    message=_short(f"{entry.result}: {entry.message}"),
                )
            )
    nodes.sort(key=lambda entry: entry.name)
    return nodes, not_listed
