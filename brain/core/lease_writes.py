"""The lock edits a node's steps make (pure): admit, change a lease, move it, free its slot.

Each edit applies only to the lease exactly as the step saw it (same phase, attempt and phase
start), so a step decided on a lease another brain has moved on changes nothing; each phase
change goes through `phase.check_transition` first. The flow runs these inside
`LockStore.update` (again on a fresh lock after a 409); the model-based tests run them on an
in-memory lock. Who is told of each transition (metrics, notifications): `TransitionObserver`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from brain.core.clock import plus
from brain.core.lock_state import CompletedReboot, LockState, NodeLease, WindowRecord
from brain.core.node_view import NodeView
from brain.core.phase import Phase, check_transition
from brain.core.window import WindowSpec


def same_visit(current: NodeLease, lease: NodeLease) -> bool:
    """Is the lock's lease still the phase visit we decided on (not a later one, same attempt)?"""
    return (
        current.phase == lease.phase
        and current.attempt == lease.attempt
        and current.since == lease.since
    )


def admission_lease(
    node: NodeView, window: str, spec: WindowSpec, now: datetime, emergency: bool, domain: str
) -> NodeLease:
    """The lease of a node the planner lets start: Pending -> Draining."""
    check_transition(node.name, Phase.PENDING, Phase.DRAINING)
    return NodeLease(
        window=window,
        phase=Phase.DRAINING,
        since=now,
        boot_id_before=node.boot_id,
        was_cordoned=node.unschedulable,
        deadline=plus(now, spec.drain.timeout),
        emergency=emergency,
        domain=domain,
        message="admitted: cordoning and draining",
    )


def update_lease(state: LockState, name: str, lease: NodeLease, changes: dict[str, Any]) -> bool:
    """Change fields of a lease that is still exactly as we saw it; False if it is not."""
    current = state.nodes.get(name)
    if current is None or not same_visit(current, lease):
        return False
    state.nodes[name] = current.model_copy(update=changes)
    return True


def move_lease(
    state: LockState,
    name: str,
    lease: NodeLease,
    target: Phase,
    now: datetime,
    message: str,
    changes: dict[str, Any],
) -> bool:
    """A phase change (checked against TRANSITIONS): the new phase starts now."""
    check_transition(name, lease.phase, target)
    return update_lease(
        state, name, lease, {**changes, "phase": target, "since": now, "message": message}
    )


def finish_lease(
    state: LockState,
    name: str,
    lease: NodeLease,
    now: datetime,
    reason: str,
    message: str,
    succeeded: bool,
    boot_id: str,
    retry_after: datetime | None,
    through: Phase | None = None,
) -> bool:
    """Free the slot (Done if succeeded, else back to Pending) and record how it ended.

    `through`: a phase passed through on the way in this same write (WaitingForNode ->
    HealthCheck -> Done when the health gate passes at once); both changes are checked.
    """
    check_transitions(name, lease.phase, Phase.DONE if succeeded else Phase.PENDING, through)
    current = state.nodes.get(name)
    if current is None or not same_visit(current, lease):
        return False
    del state.nodes[name]
    record = state.windows.setdefault(lease.window, WindowRecord())
    record.last_finished = now
    record.record(
        CompletedReboot(
            node=name,
            finished=now,
            result=reason,
            message=message,
            boot_id=boot_id,
            boot_id_before=lease.boot_id_before,
        )
    )
    if retry_after is not None:
        record.retry_after[name] = retry_after
    else:
        record.retry_after.pop(name, None)
    return True


def check_transitions(name: str, current: Phase, target: Phase, through: Phase | None) -> None:
    """A phase change, maybe through another phase on the way: each step checked."""
    if through is None:
        check_transition(name, current, target)
        return
    check_transition(name, current, through)
    check_transition(name, through, target)


class TransitionObserver:
    """Told of every transition (by the flow); metrics and notifications subclass it. This one
    does nothing."""

    def transition(
        self,
        window: str,
        node: str,
        old: Phase,
        new: Phase,
        reason: str,
        message: str,
        lease: NodeLease | None,
    ) -> None:
        return None
