"""The phase decider: what one node in maintenance does next, as a value (pure).

`decide(lease, node, spec, observations, now)` looks at the lease, the node as the index shows
it, the window's spec and what the flow has observed so far this pass, and returns one `Step`.
It never does I/O: when it needs a fact it does not have (the API's answer on the cordon, the
Job's state, a hook's answer ...) it returns an OBSERVE step naming it, and the flow
(`brain/flow.py`, the executor) finds it out and asks again with it added. The flow reads
only what a decision needs, in the order the decision needs it, so a pass costs the same
requests as before the decider existed.

Steps whose answer matters (CORDON, FORCE_DELETE, CREATE_JOB, REFUSE_ACTION) are carried out
and fed back the same way; every other step ends the node's pass. Every phase change a step
asks for is checked against `phase.TRANSITIONS` where it is written (`lease_writes`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from brain.core.lock_state import NodeLease
from brain.core.node_view import NodeView
from brain.core.phase import Phase
from brain.core.window import EmergencyDrain, OnTimeout, WindowSpec, format_duration
from pitstop import contract

# The reboot Job is read at this pace while the node is away (a failed Job fails the node
# early; the node's own return is seen through the Node watch, not by polling) ...
JOB_CHECK_INTERVAL_SECONDS = 30.0
# ... and at this pace once the node is Ready again with its old boot ID (did it reboot?).
JOB_CHECK_URGENT_SECONDS = 5.0
POLL_AGAIN_SECONDS = 2.0
HEALTH_GATE_POLL_SECONDS = 5.0
PRE_DRAIN_HOOK = "preDrain"
POST_REBOOT_HOOK = "postReboot"
# Phases a person may release a node from (every phase that holds a slot), and what it means.
RELEASE_MEANS = {
    Phase.DRAINING: "the drain is stopped",
    Phase.REBOOTING: "no reboot is started",
    Phase.WAITING_FOR_NODE: "the wait is given up and the reboot Job deleted",
    Phase.HEALTH_CHECK: "the health gate is skipped",
    Phase.FAILED: "",
}


class StepKind(StrEnum):
    """What the flow does with a step."""

    OBSERVE = "Observe"  # find out `need`, then decide again
    CORDON = "Cordon"  # cordon and mark the node; its answer is fed back (`cordon`)
    FORCE_DELETE = "ForceDelete"  # the drain's remaining pods; the count is fed back
    CREATE_JOB = "CreateJob"  # the reboot Job (409: ours); what happened is fed back
    REFUSE_ACTION = "RefuseAction"  # remove a person's action with an Event, then decide again
    WAIT = "Wait"  # nothing to do now (maybe record `record_message`, look again in `wake_in`)
    START_DRAIN = "StartDrain"  # start the drain task, deadline `drain_deadline`
    STOP_DRAIN = "StopDrain"  # the node was uncordoned during the drain: stop it
    MOVE = "Move"  # to phase `target` with `changes`, written to the lock first
    FINISH = "Finish"  # undo our marks, free the slot: Done (succeeded) or Pending


# Steps after which the flow decides again, with what it learnt added to the observations.
FEEDS_BACK = frozenset(
    {
        StepKind.OBSERVE,
        StepKind.CORDON,
        StepKind.FORCE_DELETE,
        StepKind.CREATE_JOB,
        StepKind.REFUSE_ACTION,
    }
)


class Need(StrEnum):
    """A fact a decision needs that the flow finds out (reads, never changes anything)."""

    DRAIN = "Drain"  # the drain task of this lease: none, running, or its outcome
    CORDONED_NOW = "CordonedNow"  # one GET of the Node: still cordoned?
    HOOK = "Hook"  # the phase's hook (preDrain in Draining, postReboot in HealthCheck)
    LEASE_CURRENT = "LeaseCurrent"  # before a cordon: is the lease still the lock's?
    FRESH_NODE = "FreshNode"  # the Node as the API has it now (one GET)
    JOB = "Job"  # the reboot Job's state (at most every JOB_CHECK_* seconds)
    PDBS = "Pdbs"  # the health gate: touched PodDisruptionBudgets healthy
    DAEMON_SETS = "DaemonSets"  # the health gate: the node's DaemonSet pods Ready
    LOCK_LEASE = "LockLease"  # the node's lease in a lock read again


class DrainState(StrEnum):
    NONE = "None"  # no drain task for this lease: one is to be started
    RUNNING = "Running"
    CANCELLED = "Cancelled"
    ERROR = "Error"  # the task raised (`error`): started again
    FINISHED = "Finished"


@dataclass(frozen=True)
class DrainSeen:
    state: DrainState
    completed: bool = False
    problems: bool = False  # pods refused: retrying will not help until they change
    message: str = ""
    pdbs: tuple[str, ...] = ()
    blocking_pdbs: tuple[str, ...] = ()
    error: str = ""
    daemon_set_pods: int | None = None  # seen on the node by the drain (None: not known)


class HookAnswer(StrEnum):
    PENDING = "Pending"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"  # every retry used


@dataclass(frozen=True)
class HookSeen:
    state: HookAnswer
    message: str = ""
    retry_in_seconds: float | None = None


class JobSeen(StrEnum):
    NOT_READ = "NotRead"  # not read this pass (read at a pace)
    MISSING = "Missing"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class Check:
    """A health gate check's answer; `message` says what it waits for."""

    passed: bool
    message: str = ""


@dataclass(frozen=True)
class JobCreated:
    name: str
    where: str  # namespace/name, for the message
    created: bool  # False: it existed already (ours, from before a crash)


@dataclass(frozen=True)
class Observations:
    """What the flow has seen this pass besides the lease and the index's NodeView."""

    # Has the lease's deadline passed at `now`, beyond the clock's doubt (ClusterClock.past)?
    deadline_passed: bool = False
    # This brain saw the node NotReady during this WaitingForNode visit (kept in memory).
    saw_not_ready: bool = False
    drain: DrainSeen | None = None
    cordoned_now: bool | None = None
    hook: HookSeen | None = None
    lease_current: bool | None = None
    cordon: NodeView | None = None  # the node as the cordon patch's answer shows it
    force_deleted: int | None = None
    fresh_node_read: bool = False
    fresh_node: NodeView | None = None  # None after a read: the API says 404
    job: JobSeen | None = None
    job_message: str = ""
    job_created: JobCreated | None = None
    pdbs: Check | None = None
    daemon_sets: Check | None = None
    lock_read: bool = False
    lock_lease: NodeLease | None = None
    action_refused: bool = False


@dataclass(frozen=True)
class Step:
    """One step for one node. Only the fields of its kind mean anything."""

    kind: StepKind
    need: Need | None = None
    urgent: bool = False  # Need.JOB: read at the urgent pace
    target: Phase | None = None  # MOVE; FINISH: Done or Pending
    reason: str = ""
    message: str = ""
    changes: Mapping[str, Any] = field(default_factory=dict)  # MOVE: other lease fields
    # MOVE to Rebooting: the flow names the maintenance's Job (a hash the reboot module owns).
    name_job: bool = False
    wake_in: float | None = None  # look at the node again after this many seconds
    record_message: str | None = None  # WAIT: the lease's message to write (it changed)
    log: str = ""  # a warning line for the log
    drain_deadline: datetime | None = None  # START_DRAIN
    uncordon: bool = False  # FINISH (unless the node was cordoned before us)
    succeeded: bool = False  # FINISH: Done (else back to Pending)
    retry_after: datetime | None = None  # FINISH: the node rests until then
    with_labels: bool = False  # FINISH: the window's nodeLabels change in the same patch
    clear_action: bool = False  # FINISH: in its patch; MOVE: once moved
    cancel_drain: bool = False  # FINISH: stop a drain task first
    # FINISH: the phase passed through on the way, in the same lock write (WaitingForNode ->
    # HealthCheck -> Done when the health gate passes at once); each change is checked.
    through: Phase | None = None
    # A Job that must never reboot the node: FINISH deletes it first, MOVE once moved.
    delete_job: str = ""


def _wait(wake_in: float | None = None, record_message: str | None = None, log: str = "") -> Step:
    return Step(StepKind.WAIT, wake_in=wake_in, record_message=record_message, log=log)


def _observe(need: Need, urgent: bool = False) -> Step:
    return Step(StepKind.OBSERVE, need=need, urgent=urgent)


def _move(target: Phase, reason: str, message: str, **changes: Any) -> Step:
    return Step(StepKind.MOVE, target=target, reason=reason, message=message, changes=changes)


def _fail(reason: str, message: str) -> Step:
    return _move(Phase.FAILED, reason, message)


def _waiting_for(lease: NodeLease, message: str, wake_in: float | None) -> Step:
    """Wait, and let the lease's message say what for (written only when it changes)."""
    return _wait(wake_in, record_message=message if lease.message != message else None)


def parse_time(text: str) -> datetime | None:
    """An RFC 3339 time from an annotation; None if absent or unreadable."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def decide(
    lease: NodeLease,
    node: NodeView | None,
    spec: WindowSpec,
    observations: Observations,
    now: datetime,
) -> Step:
    """The next step for a node in maintenance. `node` None: the API said 404 (deleted)."""
    if node is None:
        return Step(
            StepKind.FINISH,
            target=Phase.PENDING,
            reason="NodeDeleted",
            message="the node was deleted while in maintenance",
        )
    if node.action and not observations.action_refused:
        step = _person_action(lease, node, spec, observations, now)
        if step is not None:
            return step
    if lease.phase is Phase.DRAINING:
        return _draining(lease, node, spec, observations, now)
    if lease.phase is Phase.REBOOTING:
        return _rebooting(lease, spec, observations, now)
    if lease.phase is Phase.WAITING_FOR_NODE:
        return _waiting_for_node(lease, node, spec, observations, now)
    if lease.phase is Phase.HEALTH_CHECK:
        return _health_check(lease, node, spec, observations, now)
    return _wait()  # Failed keeps its slot until a person acts


# -- what a person asked for -------------------------------------------------------------------


def _person_action(
    lease: NodeLease, node: NodeView, spec: WindowSpec, seen: Observations, now: datetime
) -> Step | None:
    """Act on the node's `pitstop.dev/action`, or refuse it (then the phase's step follows).

    An action asked for an earlier phase than the lease's (its `action-since` is older than
    the phase start) is stale: refused, never replayed at a later phase. None: no action step.
    """
    asked_for = parse_time(node.action_since)
    if asked_for is not None and asked_for > lease.since:
        # The person saw a phase our copy of the lock does not show yet: read it again.
        if not seen.lock_read:
            return _observe(Need.LOCK_LEASE)
        if seen.lock_lease is not None and seen.lock_lease.since >= asked_for:
            return _wait(0)
    if asked_for is not None and asked_for != lease.since:
        return Step(
            StepKind.REFUSE_ACTION,
            message=(
                f"{node.action} was asked for an earlier phase (started {node.action_since}); "
                f"the node is {lease.phase} since {lease.since.isoformat()}: ignored, ask again "
                "if it still applies"
            ),
        )
    if node.action == contract.ACTION_RELEASE:
        return _release(lease, node, spec, now)
    if node.action == contract.ACTION_RETRY and lease.phase is Phase.FAILED:
        # A new attempt: drained and rebooted again, with a Job of its own; the failed
        # attempt's Job is deleted so it never reboots the node late.
        return Step(
            StepKind.MOVE,
            target=Phase.DRAINING,
            reason="Retry",
            message="retry requested by a person",
            changes={
                "deadline": now + spec.drain.timeout,
                "job_name": "",
                "attempt": lease.attempt + 1,
                "boot_id_before": node.boot_id,
                "saw_not_ready": False,
                "pdbs": [],
            },
            clear_action=True,
            delete_job=lease.job_name,
        )
    if node.action == contract.ACTION_RETRY:
        why = f"retry applies only to a Failed node; it is {lease.phase}"
    else:
        why = f"unknown action {node.action!r} (retry or release)"
    return Step(StepKind.REFUSE_ACTION, message=why)


def _release(lease: NodeLease, node: NodeView, spec: WindowSpec, now: datetime) -> Step:
    """Give up on the node in whatever phase: no drain, no reboot, no waiting, no gate.

    A node released before it rebooted rests (retryAfter) like one whose drain was aborted.
    """
    rebooted = bool(lease.boot_id_before) and node.boot_id not in ("", lease.boot_id_before)
    means = RELEASE_MEANS.get(lease.phase, "")
    # A Job that has not rebooted the node yet must not do it once it is uncordoned.
    job = lease.job_name if lease.phase in _PHASES_WITH_JOB else ""
    return Step(
        StepKind.FINISH,
        target=Phase.PENDING,
        reason="Released",
        message=f"released by a person in {lease.phase}" + (f": {means}" if means else ""),
        uncordon=True,
        clear_action=True,
        retry_after=None if rebooted else now + spec.drain.timeout,
        with_labels=True,
        cancel_drain=True,
        delete_job=job,
    )


_PHASES_WITH_JOB = frozenset({Phase.REBOOTING, Phase.WAITING_FOR_NODE, Phase.FAILED})


# -- phases ------------------------------------------------------------------------------------


def _drain_aborted(reason: str, message: str, spec: WindowSpec, now: datetime) -> Step:
    """Uncordoned, slot freed; the node rests for one drain timeout before it is tried again."""
    return Step(
        StepKind.FINISH,
        target=Phase.PENDING,
        reason=reason,
        message=message,
        uncordon=True,
        retry_after=now + spec.drain.timeout,
        with_labels=True,
    )


def _draining(
    lease: NodeLease, node: NodeView, spec: WindowSpec, seen: Observations, now: datetime
) -> Step:
    if seen.drain is None:
        return _observe(Need.DRAIN)
    drain = seen.drain
    if drain.state is DrainState.RUNNING:
        if node.unschedulable:
            return _wait()  # the drain task wakes the window when it ends
        # The index shows it schedulable: it may lag our cordon; only the API's answer counts.
        if seen.cordoned_now is None:
            return _observe(Need.CORDONED_NOW)
        if seen.cordoned_now:
            return _wait()
        # Someone uncordoned it (a person, or another brain that finished it): evicting now
        # would chase the workloads' replacements back onto it.
        return Step(
            StepKind.STOP_DRAIN,
            wake_in=0,
            log=f"node {node.name} was uncordoned during its drain: drain stopped",
        )
    if drain.state is DrainState.NONE:
        return _start_drain(lease, node, spec, seen, now)
    if drain.state is DrainState.CANCELLED:
        return _wait(0)
    if drain.state is DrainState.ERROR:
        return _wait(
            POLL_AGAIN_SECONDS, log=f"drain of node {node.name} failed, will retry: {drain.error}"
        )
    if drain.completed:
        return _to_rebooting(lease, node, list(drain.pdbs), drain.message, drain.daemon_set_pods)
    if drain.problems or (seen.deadline_passed and spec.drain.on_timeout is OnTimeout.ABORT):
        return _drain_aborted("DrainAborted", drain.message, spec, now)
    if seen.deadline_passed:
        if seen.force_deleted is None:
            return Step(StepKind.FORCE_DELETE)
        return _to_rebooting(
            lease,
            node,
            sorted({*drain.pdbs, *drain.blocking_pdbs}),
            f"drain timed out; force-deleted {seen.force_deleted} pods ({drain.message})",
            drain.daemon_set_pods,
        )
    return _wait(POLL_AGAIN_SECONDS)  # the drain ended early (an error): start again


def _start_drain(
    lease: NodeLease, node: NodeView, spec: WindowSpec, seen: Observations, now: datetime
) -> Step:
    """[preDrain hook] then cordon (the patch's answer must show it), then the drain."""
    if spec.hooks.pre_drain is not None:
        if seen.hook is None:
            return _observe(Need.HOOK)
        if seen.hook.state is HookAnswer.FAILED:
            message = f"{PRE_DRAIN_HOOK} hook failed: {seen.hook.message}"
            return _drain_aborted("PreDrainHookFailed", message, spec, now)
        if seen.hook.state is not HookAnswer.SUCCEEDED:
            why = seen.hook.message or "call under way"
            message = f"waiting for the {PRE_DRAIN_HOOK} hook: {why}"
            return _waiting_for(lease, message, seen.hook.retry_in_seconds or None)
    if seen.lease_current is None:
        return _observe(Need.LEASE_CURRENT)
    if not seen.lease_current:
        return _wait(0)  # another brain moved it on: the next pass sees its lease
    if seen.cordon is None:
        return Step(StepKind.CORDON)
    if not seen.cordon.unschedulable:
        return _wait(
            POLL_AGAIN_SECONDS, log=f"node {node.name}: the cordon did not hold; trying again"
        )
    skip_drain = not spec.drain.enabled or (
        lease.emergency and spec.emergency.drain is EmergencyDrain.SKIP
    )
    if skip_drain:
        return _to_rebooting(lease, seen.cordon, [], "drain skipped")
    return Step(StepKind.START_DRAIN, drain_deadline=lease.deadline or now + spec.drain.timeout)


def _to_rebooting(
    lease: NodeLease,
    node: NodeView,
    pdbs: list[str],
    note: str,
    daemon_set_pods: int | None = None,
) -> Step:
    """Drained: Rebooting, with the boot to reboot from, the maintenance's Job name, and how
    many DaemonSet pods the drain saw on the node (None: no drain, not known).

    If the node rebooted since its admission (another brain finished it while this one
    admitted it from an older view, or a person rebooted it), the boot it was admitted at is
    kept: the Rebooting step then sees the new boot and starts no second reboot.
    """
    boot_id = node.boot_id
    if lease.boot_id_before and boot_id and boot_id != lease.boot_id_before:
        boot_id = lease.boot_id_before
    return Step(
        StepKind.MOVE,
        target=Phase.REBOOTING,
        reason="Drained",
        message=note,
        changes={
            "boot_id_before": boot_id,
            "pdbs": sorted({*lease.pdbs, *pdbs}),
            "deadline": None,
            "daemon_set_pods": daemon_set_pods,
        },
        name_job=True,
    )


def _rebooting(lease: NodeLease, spec: WindowSpec, seen: Observations, now: datetime) -> Step:
    # The Node as the API has it now, not as the index or memory last saw it (one GET).
    if not seen.fresh_node_read:
        return _observe(Need.FRESH_NODE)
    node = seen.fresh_node
    if node is None:
        return _wait()  # the next pass reads the 404 again and finishes the node as deleted
    deadline = now + spec.reboot.node_return_timeout
    if node.boot_id and node.boot_id != lease.boot_id_before:
        # Rebooted already (the brain was down meanwhile): never start a second reboot.
        return _move(
            Phase.WAITING_FOR_NODE,
            "RebootStarted",
            "the node already reports a new boot ID",
            deadline=deadline,
        )
    if not node.unschedulable:
        # Never reboot an uncordoned node: cordon and drain again. A Job created before a
        # crash must not reboot it now; the next drain makes its own.
        return Step(
            StepKind.MOVE,
            target=Phase.DRAINING,
            reason="Uncordoned",
            message="the node was uncordoned before its reboot: cordoning and draining it again",
            changes={"deadline": now + spec.drain.timeout, "job_name": ""},
            delete_job=lease.job_name,
        )
    if seen.job_created is None:
        return Step(StepKind.CREATE_JOB)
    job = seen.job_created
    message = f"reboot Job {job.where} " + ("created" if job.created else "already exists")
    if lease.message:  # what the drain did (the Drained step posts no Event of its own)
        message = f"{lease.message}; {message}"
    return _move(
        Phase.WAITING_FOR_NODE, "RebootStarted", message, deadline=deadline, job_name=job.name
    )


def _waiting_for_node(
    lease: NodeLease, node: NodeView, spec: WindowSpec, seen: Observations, now: datetime
) -> Step:
    if node.boot_id and node.boot_id != lease.boot_id_before and node.ready:
        return _node_returned(lease, node, spec, seen, now)
    # (sawNotReady in the lock: written by brains before this one)
    saw_not_ready = lease.saw_not_ready or seen.saw_not_ready or not node.ready
    came_back_unchanged = saw_not_ready and node.ready
    if seen.job is None:
        return _observe(Need.JOB, urgent=came_back_unchanged)
    if seen.job is JobSeen.FAILED:
        return _fail("RebootJobFailed", f"reboot Job {lease.job_name} failed: {seen.job_message}")
    if seen.job is JobSeen.SUCCEEDED and came_back_unchanged:
        return _fail(
            "SameBootID",
            "the node came back with the same boot ID after the reboot Job finished: it did "
            "not reboot",
        )
    if seen.deadline_passed:
        return _fail(
            "NodeDidNotReturn",
            f"the node did not come back with a new boot ID and Ready within "
            f"{format_duration(spec.reboot.node_return_timeout)}",
        )
    if lease.deadline is None:
        return _wait()
    pace = JOB_CHECK_URGENT_SECONDS if came_back_unchanged else JOB_CHECK_INTERVAL_SECONDS
    return _wait(min(pace, max((lease.deadline - now).total_seconds(), 0.1)))


def _node_returned(
    lease: NodeLease, node: NodeView, spec: WindowSpec, seen: Observations, now: datetime
) -> Step:
    """The node is Ready at a new boot: HealthCheck, or straight on to Done in the same write.

    Without a postReboot hook (calling it is an act: HealthCheck is written first), the health
    gate's checks only read (the Node view, the PDBs, the node's DaemonSet pods), so they are
    made at once: passed, the node finishes from here, HealthCheck and Done in one lock write
    (its marks undone first, as any finish). Otherwise HealthCheck is written, with what the
    gate waits for as its message (no second write to say it).
    """
    deadline = now + spec.reboot.health_gate.timeout
    returned = f"node is Ready with a new boot ID ({node.boot_id[:8]}...)"
    if spec.hooks.post_reboot is not None:
        return _move(Phase.HEALTH_CHECK, "NodeReturned", returned, deadline=deadline)
    waiting = _not_ready_taints(node)
    if not waiting:
        gate = _gate_checks(lease, spec, seen)
        if isinstance(gate, Step):
            return gate
        if gate is None:
            return replace(_rebooted(), through=Phase.HEALTH_CHECK)
        waiting = f"waiting for {gate}"
    return _move(Phase.HEALTH_CHECK, "NodeReturned", waiting, deadline=deadline)


def _not_ready_taints(node: NodeView) -> str:
    """What the gate waits for while the control plane still shows the node not ready ("":
    nothing). A node reports Ready before the node lifecycle controller has seen it so: its
    not-ready:NoExecute taint stays until the controller's next pass. Uncordoned meanwhile, it
    would get the next drain's pods, which the controller may then mark NotReady."""
    taints = node.not_ready_taint_keys  # by key: a change of effect is no news
    if not taints:
        return ""
    return f"waiting for the control plane to clear not-ready ({', '.join(taints)})"


def _gate_checks(lease: NodeLease, spec: WindowSpec, seen: Observations) -> Step | str | None:
    """The health gate's checks after the node's own state: a fact to find out first (an
    OBSERVE step), what it waits for, or None: passed."""
    if spec.reboot.health_gate.pods_ready and lease.pdbs:
        if seen.pdbs is None:
            return _observe(Need.PDBS)
        if not seen.pdbs.passed:
            return seen.pdbs.message
    # A node whose drain saw no DaemonSet pod on it has no node-local agent to wait for: the
    # pod list would say nothing (unknown, after a skipped drain or from an older lock: listed).
    if spec.reboot.health_gate.daemon_sets_ready and lease.daemon_set_pods != 0:
        if seen.daemon_sets is None:
            return _observe(Need.DAEMON_SETS)
        if not seen.daemon_sets.passed:
            return seen.daemon_sets.message
    return None


def _rebooted() -> Step:
    return Step(
        StepKind.FINISH,
        target=Phase.DONE,
        reason="Rebooted",
        message="rebooted, back and healthy",
        uncordon=True,
        succeeded=True,
        with_labels=True,
    )


def _health_check(
    lease: NodeLease, node: NodeView, spec: WindowSpec, seen: Observations, now: datetime
) -> Step:
    """[postReboot hook], control plane sees it Ready, PDBs healthy, DaemonSet pods Ready."""
    if lease.boot_id_before and node.boot_id == lease.boot_id_before:
        # A view older than the node's return (HealthCheck began once the node showed a new
        # boot; this brain's Node watch lags another brain's): judged on it, the node would be
        # recorded as rebooted at its old boot, and admitted again for a second reboot.
        return _wait(HEALTH_GATE_POLL_SECONDS)
    if spec.hooks.post_reboot is not None:
        if seen.hook is None:
            return _observe(Need.HOOK)
        if seen.hook.state is not HookAnswer.SUCCEEDED:
            if seen.deadline_passed:
                return _fail(
                    "PostRebootHookFailed",
                    f"{POST_REBOOT_HOOK} hook did not succeed in time: {lease.message}",
                )
            why = seen.hook.message or "call under way"
            message = f"waiting for the {POST_REBOOT_HOOK} hook: {why}"
            return _waiting_for(lease, message, seen.hook.retry_in_seconds or None)
    waiting = _not_ready_taints(node)
    if waiting:
        if seen.deadline_passed:
            return _fail("HealthGateTimeout", f"health gate not passed in time: {waiting}")
        left = (
            (lease.deadline - now).total_seconds() if lease.deadline else HEALTH_GATE_POLL_SECONDS
        )
        return _waiting_for(lease, waiting, min(HEALTH_GATE_POLL_SECONDS, max(left, 0.1)))
    gate = _gate_checks(lease, spec, seen)
    if isinstance(gate, Step):
        return gate
    if gate is not None:
        return _gate_not_passed(lease, seen, gate)
    return _rebooted()


def _gate_not_passed(lease: NodeLease, seen: Observations, what: str) -> Step:
    if seen.deadline_passed:
        return _fail("HealthGateTimeout", f"health gate not passed in time: {what}")
    return _waiting_for(lease, f"waiting for {what}", HEALTH_GATE_POLL_SECONDS)
