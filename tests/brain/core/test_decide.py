"""The phase decider, phase by phase: the step it chooses from a lease, a node and observations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from brain.core.decide import (
    Check,
    DrainSeen,
    DrainState,
    HookAnswer,
    HookSeen,
    JobCreated,
    JobSeen,
    Need,
    Observations,
    Step,
    StepKind,
    decide,
)
from brain.core.lease_writes import admission_lease, finish_lease, move_lease
from brain.core.lock_state import LockState, NodeLease
from brain.core.node_view import NodeView, Taint
from brain.core.phase import TRANSITIONS, IllegalTransitionError, Phase, check_transition
from brain.core.window import WindowSpec, parse_window_spec
from pitstop import contract

NOW = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)
ADMITTED = NOW - timedelta(minutes=5)
SPEC = WindowSpec()


def spec(**fields: Any) -> WindowSpec:
    return parse_window_spec(fields, "w")


def lease(phase: Phase, **fields: Any) -> NodeLease:
    base: dict[str, Any] = {
        "window": "w",
        "phase": phase,
        "since": ADMITTED,
        "boot_id_before": "boot-a",
        "deadline": NOW + timedelta(minutes=5),
    }
    return NodeLease(**{**base, **fields})


def rebooted(phase: Phase, **fields: Any) -> NodeLease:
    """A lease of a node rebooted from boot-0: node() shows its new boot."""
    return lease(phase, boot_id_before="boot-0", **fields)


def node(**fields: Any) -> NodeView:
    base: dict[str, Any] = {"name": "n1", "boot_id": "boot-a", "unschedulable": True}
    return NodeView(**{**base, **fields})


def step_for(
    the_lease: NodeLease,
    the_node: NodeView | None = None,
    the_spec: WindowSpec = SPEC,
    **seen: Any,
) -> Step:
    return decide(the_lease, the_node or node(), the_spec, Observations(**seen), NOW)


def asks(step: Step) -> Need | StepKind:
    return step.need if step.kind is StepKind.OBSERVE and step.need is not None else step.kind


# -- a deleted node ---------------------------------------------------------------------------


@pytest.mark.parametrize("phase", sorted(TRANSITIONS.keys() - {Phase.PENDING, Phase.DONE}))
def test_a_deleted_node_is_finished_in_every_phase(phase: Phase) -> None:
    step = decide(lease(phase), None, SPEC, Observations(), NOW)
    assert step.kind is StepKind.FINISH and step.reason == "NodeDeleted"
    assert step.target is Phase.PENDING and not step.uncordon


# -- Draining -----------------------------------------------------------------------------------


def test_draining_first_asks_for_its_drain_task() -> None:
    assert asks(step_for(lease(Phase.DRAINING))) is Need.DRAIN


def test_a_first_drain_checks_the_lease_then_cordons_then_starts() -> None:
    draining = lease(Phase.DRAINING)
    none = DrainSeen(DrainState.NONE)
    assert asks(step_for(draining, drain=none)) is Need.LEASE_CURRENT
    assert step_for(draining, drain=none, lease_current=False) == Step(StepKind.WAIT, wake_in=0)
    assert asks(step_for(draining, drain=none, lease_current=True)) is StepKind.CORDON
    step = step_for(draining, drain=none, lease_current=True, cordon=node(unschedulable=True))
    assert step.kind is StepKind.START_DRAIN and step.drain_deadline == draining.deadline


def test_a_cordon_that_did_not_hold_starts_no_drain() -> None:
    step = step_for(
        lease(Phase.DRAINING),
        drain=DrainSeen(DrainState.NONE),
        lease_current=True,
        cordon=node(unschedulable=False),
    )
    assert step.kind is StepKind.WAIT and "did not hold" in step.log


def test_a_drain_disabled_goes_to_rebooting_after_the_cordon_only() -> None:
    step = step_for(
        lease(Phase.DRAINING),
        the_spec=spec(drain={"enabled": False}),
        drain=DrainSeen(DrainState.NONE),
        lease_current=True,
        cordon=node(unschedulable=True),
    )
    assert step.kind is StepKind.MOVE and step.target is Phase.REBOOTING
    assert step.message == "drain skipped" and step.name_job


def test_the_pre_drain_hook_comes_before_the_cordon() -> None:
    hooked = spec(hooks={"preDrain": {"url": "http://hook.example/pre"}})
    draining = lease(Phase.DRAINING)
    none = DrainSeen(DrainState.NONE)
    assert asks(step_for(draining, the_spec=hooked, drain=none)) is Need.HOOK
    waiting = step_for(
        draining, the_spec=hooked, drain=none, hook=HookSeen(HookAnswer.PENDING, "", 3.0)
    )
    assert waiting.kind is StepKind.WAIT and waiting.wake_in == 3.0
    assert waiting.record_message == "waiting for the preDrain hook: call under way"
    failed = step_for(
        draining, the_spec=hooked, drain=none, hook=HookSeen(HookAnswer.FAILED, "HTTP 500")
    )
    assert failed.kind is StepKind.FINISH and failed.reason == "PreDrainHookFailed"
    assert failed.uncordon and failed.retry_after == NOW + hooked.drain.timeout
    passed = step_for(draining, the_spec=hooked, drain=none, hook=HookSeen(HookAnswer.SUCCEEDED))
    assert asks(passed) is Need.LEASE_CURRENT


def test_a_running_drain_on_a_node_the_api_shows_uncordoned_is_stopped() -> None:
    draining = lease(Phase.DRAINING)
    running = DrainSeen(DrainState.RUNNING)
    assert step_for(draining, node(unschedulable=True), drain=running).kind is StepKind.WAIT
    schedulable = node(unschedulable=False)
    assert asks(step_for(draining, schedulable, drain=running)) is Need.CORDONED_NOW
    assert step_for(draining, schedulable, drain=running, cordoned_now=True).kind is StepKind.WAIT
    stopped = step_for(draining, schedulable, drain=running, cordoned_now=False)
    assert stopped.kind is StepKind.STOP_DRAIN


def test_a_completed_drain_moves_to_rebooting_with_its_pdbs() -> None:
    done = DrainSeen(DrainState.FINISHED, completed=True, message="evicted 3", pdbs=("ns/b",))
    step = step_for(lease(Phase.DRAINING, pdbs=["ns/a"]), drain=done)
    assert step.kind is StepKind.MOVE and step.target is Phase.REBOOTING
    assert step.changes["pdbs"] == ["ns/a", "ns/b"] and step.changes["boot_id_before"] == "boot-a"
    assert step.message == "evicted 3" and step.changes["deadline"] is None


def test_to_rebooting_keeps_the_admission_boot_id_of_a_node_that_rebooted_meanwhile() -> None:
    """The double-reboot guard: admitted at boot A, the node shows boot B by the end of the
    drain (another brain finished it, or a person rebooted it). Rebooting must keep A, so its
    step sees a new boot and starts no second reboot."""
    done = DrainSeen(DrainState.FINISHED, completed=True, message="evicted 0")
    draining = lease(Phase.DRAINING, boot_id_before="boot-a")
    step = step_for(draining, node(boot_id="boot-b"), drain=done)
    assert step.changes["boot_id_before"] == "boot-a"
    rebooting = lease(Phase.REBOOTING, boot_id_before=step.changes["boot_id_before"])
    seen_after = step_for(rebooting, fresh_node_read=True, fresh_node=node(boot_id="boot-b"))
    assert seen_after.kind is StepKind.MOVE and seen_after.target is Phase.WAITING_FOR_NODE
    assert (
        seen_after.reason == "RebootStarted" and "already reports a new boot" in seen_after.message
    )
    # Same for a drain skipped (the cordon's answer shows the new boot).
    skipped = step_for(
        draining,
        the_spec=spec(drain={"enabled": False}),
        drain=DrainSeen(DrainState.NONE),
        lease_current=True,
        cordon=node(boot_id="boot-b"),
    )
    assert skipped.changes["boot_id_before"] == "boot-a"


def test_a_drain_without_an_admission_boot_records_the_current_one() -> None:
    done = DrainSeen(DrainState.FINISHED, completed=True)
    step = step_for(lease(Phase.DRAINING, boot_id_before=""), node(boot_id="boot-b"), drain=done)
    assert step.changes["boot_id_before"] == "boot-b"


def test_a_drain_with_problems_or_past_its_deadline_is_aborted() -> None:
    refused = DrainSeen(DrainState.FINISHED, problems=True, message="pods refused")
    step = step_for(lease(Phase.DRAINING), drain=refused)
    assert step.kind is StepKind.FINISH and step.reason == "DrainAborted" and step.uncordon
    assert step.retry_after == NOW + SPEC.drain.timeout and step.target is Phase.PENDING
    late = DrainSeen(DrainState.FINISHED, message="2 pods left")
    assert step_for(lease(Phase.DRAINING), drain=late, deadline_passed=True).reason == (
        "DrainAborted"
    )
    # Not past its deadline: the drain ended early (an error); it is started again.
    again = step_for(lease(Phase.DRAINING), drain=late)
    assert again.kind is StepKind.WAIT and again.wake_in == 2.0


def test_a_drain_past_its_deadline_with_force_deletes_then_reboots() -> None:
    forced = spec(drain={"onTimeout": "Force"})
    late = DrainSeen(
        DrainState.FINISHED, message="1 pod left", pdbs=("a/x",), blocking_pdbs=("a/y",)
    )
    draining = lease(Phase.DRAINING)
    assert asks(step_for(draining, the_spec=forced, drain=late, deadline_passed=True)) is (
        StepKind.FORCE_DELETE
    )
    step = step_for(draining, the_spec=forced, drain=late, deadline_passed=True, force_deleted=1)
    assert step.target is Phase.REBOOTING and step.changes["pdbs"] == ["a/x", "a/y"]
    assert step.message == "drain timed out; force-deleted 1 pods (1 pod left)"


def test_a_drain_that_raised_or_was_cancelled_is_looked_at_again() -> None:
    error = step_for(lease(Phase.DRAINING), drain=DrainSeen(DrainState.ERROR, error="boom"))
    assert error.kind is StepKind.WAIT and error.wake_in == 2.0 and "boom" in error.log
    cancelled = step_for(lease(Phase.DRAINING), drain=DrainSeen(DrainState.CANCELLED))
    assert cancelled == Step(StepKind.WAIT, wake_in=0)


# -- Rebooting ----------------------------------------------------------------------------------


def test_rebooting_reads_the_node_then_creates_the_job_on_a_cordoned_node() -> None:
    rebooting = lease(Phase.REBOOTING, job_name="job-1", message="evicted 2")
    assert asks(step_for(rebooting)) is Need.FRESH_NODE
    fresh = node(unschedulable=True)
    assert asks(step_for(rebooting, fresh_node_read=True, fresh_node=fresh)) is StepKind.CREATE_JOB
    step = step_for(
        rebooting,
        fresh_node_read=True,
        fresh_node=fresh,
        job_created=JobCreated("job-1", "pitstop/job-1", created=True),
    )
    assert step.kind is StepKind.MOVE and step.target is Phase.WAITING_FOR_NODE
    assert step.message == "evicted 2; reboot Job pitstop/job-1 created"
    assert step.changes == {
        "deadline": NOW + SPEC.reboot.node_return_timeout,
        "job_name": "job-1",
    }


def test_rebooting_never_creates_a_job_on_an_uncordoned_node() -> None:
    """Whatever the index shows, only the API's answer counts: uncordoned -> drained again."""
    rebooting = lease(Phase.REBOOTING, job_name="job-1")
    step = step_for(
        rebooting,
        node(unschedulable=True),
        fresh_node_read=True,
        fresh_node=node(unschedulable=False),
    )
    assert step.kind is StepKind.MOVE and step.target is Phase.DRAINING
    assert step.reason == "Uncordoned" and step.delete_job == "job-1"
    assert step.changes == {"deadline": NOW + SPEC.drain.timeout, "job_name": ""}


def test_rebooting_waits_while_the_api_says_the_node_is_gone() -> None:
    step = step_for(lease(Phase.REBOOTING), fresh_node_read=True, fresh_node=None)
    assert step == Step(StepKind.WAIT)


# -- WaitingForNode -----------------------------------------------------------------------------


def test_a_node_back_whose_gate_passes_at_once_is_done_in_the_same_write() -> None:
    """The health gate's checks only read: made as the node returns, passed, the node goes
    through HealthCheck to Done in one lock write (no HealthCheck write of its own)."""
    waiting = lease(Phase.WAITING_FOR_NODE, pdbs=["ns/web"])
    back = node(boot_id="boot-b", ready=True)
    assert asks(step_for(waiting, back)) is Need.PDBS
    assert asks(step_for(waiting, back, pdbs=Check(True))) is Need.DAEMON_SETS
    step = step_for(waiting, back, pdbs=Check(True), daemon_sets=Check(True))
    assert step.kind is StepKind.FINISH and step.target is Phase.DONE and step.succeeded
    assert step.through is Phase.HEALTH_CHECK and step.reason == "Rebooted" and step.uncordon


def test_a_node_back_whose_gate_waits_goes_to_the_health_check_saying_for_what() -> None:
    waiting = lease(Phase.WAITING_FOR_NODE, pdbs=["ns/web"])
    back = node(boot_id="boot-b", ready=True)
    step = step_for(waiting, back, pdbs=Check(False, "ns/web: 0 of 1"))
    assert step.target is Phase.HEALTH_CHECK and step.reason == "NodeReturned"
    assert step.changes == {"deadline": NOW + SPEC.reboot.health_gate.timeout}
    assert step.message == "waiting for ns/web: 0 of 1"
    # In HealthCheck, the same wait writes no message again (one lock write, not two).
    checking = lease(Phase.HEALTH_CHECK, pdbs=["ns/web"], message=step.message)
    again = step_for(checking, back, pdbs=Check(False, "ns/web: 0 of 1"))
    assert again.kind is StepKind.WAIT and again.record_message is None


def test_a_node_back_but_not_ready_to_the_control_plane_goes_to_the_health_check() -> None:
    tainted = node(
        boot_id="boot-b",
        ready=True,
        taints=(Taint(contract.CONTROL_PLANE_NOT_READY_TAINT_KEYS[0], "", "NoExecute"),),
    )
    step = step_for(lease(Phase.WAITING_FOR_NODE), tainted)
    assert step.target is Phase.HEALTH_CHECK and "clear not-ready" in step.message


def test_a_node_back_with_a_post_reboot_hook_goes_to_the_health_check_first() -> None:
    """Calling the hook is an act: HealthCheck is written before it."""
    hooked = spec(hooks={"postReboot": {"url": "http://hook.example/post"}})
    step = step_for(lease(Phase.WAITING_FOR_NODE), node(boot_id="boot-b", ready=True), hooked)
    assert step.target is Phase.HEALTH_CHECK and step.reason == "NodeReturned"
    assert step.message.startswith("node is Ready with a new boot ID")


def test_a_finish_through_a_phase_checks_both_changes() -> None:
    state = LockState(nodes={"n1": lease(Phase.WAITING_FOR_NODE)})
    with pytest.raises(IllegalTransitionError):  # WaitingForNode -> Done alone is not allowed
        finish_lease(
            state, "n1", lease(Phase.WAITING_FOR_NODE), NOW, "Rebooted", "", True, "b", None
        )
    with pytest.raises(IllegalTransitionError):  # nor through a phase that does not lead there
        finish_lease(
            state,
            "n1",
            lease(Phase.WAITING_FOR_NODE),
            NOW,
            "Rebooted",
            "",
            True,
            "b",
            None,
            through=Phase.REBOOTING,
        )
    assert finish_lease(
        state,
        "n1",
        lease(Phase.WAITING_FOR_NODE),
        NOW,
        "Rebooted",
        "",
        True,
        "b",
        None,
        through=Phase.HEALTH_CHECK,
    )
    assert "n1" not in state.nodes


def test_a_new_boot_not_yet_ready_keeps_waiting() -> None:
    waiting = lease(Phase.WAITING_FOR_NODE, job_name="job-1")
    step = step_for(waiting, node(boot_id="boot-b", ready=False))
    assert asks(step) is Need.JOB and not step.urgent


def test_waiting_for_node_reads_the_job_and_fails_a_failed_one() -> None:
    waiting = lease(Phase.WAITING_FOR_NODE, job_name="job-1")
    step = step_for(waiting, job=JobSeen.FAILED, job_message="BackoffLimitExceeded")
    assert step.target is Phase.FAILED and step.reason == "RebootJobFailed"
    assert "BackoffLimitExceeded" in step.message


def test_a_node_back_with_the_same_boot_after_not_ready_fails_once_its_job_succeeded() -> None:
    waiting = lease(Phase.WAITING_FOR_NODE, job_name="job-1")
    ready_again = node(ready=True)
    # Never seen NotReady: not "back" yet; the Job is read at the slow pace.
    assert not step_for(waiting, ready_again).urgent
    urgent = step_for(waiting, ready_again, saw_not_ready=True)
    assert asks(urgent) is Need.JOB and urgent.urgent
    failed = step_for(waiting, ready_again, saw_not_ready=True, job=JobSeen.SUCCEEDED)
    assert failed.target is Phase.FAILED and failed.reason == "SameBootID"
    # sawNotReady written by an older brain counts as well.
    older = lease(Phase.WAITING_FOR_NODE, job_name="job-1", saw_not_ready=True)
    assert step_for(older, ready_again, job=JobSeen.SUCCEEDED).reason == "SameBootID"
    # A Job succeeded while the node never went away: not proof of anything yet.
    assert step_for(waiting, ready_again, job=JobSeen.SUCCEEDED).kind is StepKind.WAIT


def test_a_node_that_does_not_return_in_time_fails() -> None:
    waiting = lease(Phase.WAITING_FOR_NODE, job_name="job-1")
    step = step_for(waiting, node(ready=False), job=JobSeen.NOT_READ, deadline_passed=True)
    assert step.target is Phase.FAILED and step.reason == "NodeDidNotReturn"
    assert "15m" in step.message


def test_waiting_for_node_looks_again_at_the_job_pace_or_the_deadline() -> None:
    waiting = lease(Phase.WAITING_FOR_NODE, deadline=NOW + timedelta(seconds=12))
    assert step_for(waiting, node(ready=False), job=JobSeen.RUNNING).wake_in == 12.0
    far = lease(Phase.WAITING_FOR_NODE, deadline=NOW + timedelta(minutes=10))
    assert step_for(far, node(ready=False), job=JobSeen.NOT_READ).wake_in == 30.0
    assert step_for(far, node(ready=True), saw_not_ready=True, job=JobSeen.RUNNING).wake_in == 5.0


# -- HealthCheck --------------------------------------------------------------------------------


def test_health_check_passes_to_done() -> None:
    checking = lease(Phase.HEALTH_CHECK)
    assert asks(step_for(checking, node(boot_id="boot-b"))) is Need.DAEMON_SETS  # on by default
    step = step_for(checking, node(boot_id="boot-b"), daemon_sets=Check(True))
    assert step.kind is StepKind.FINISH and step.target is Phase.DONE and step.succeeded
    assert step.reason == "Rebooted" and step.uncordon and step.with_labels


def test_the_gate_lists_no_pods_on_a_node_whose_drain_saw_no_daemon_set_pod() -> None:
    """No DaemonSet pod before the reboot: no node-local agent to wait for (the pod list would
    say nothing). Some, or not known (a skipped drain, an older lock): the pods are listed."""
    back = node(boot_id="boot-b")
    none = rebooted(Phase.HEALTH_CHECK, daemon_set_pods=0)
    assert step_for(none, back).target is Phase.DONE
    assert asks(step_for(rebooted(Phase.HEALTH_CHECK, daemon_set_pods=2), back)) is Need.DAEMON_SETS
    assert asks(step_for(rebooted(Phase.HEALTH_CHECK), back)) is Need.DAEMON_SETS


def test_the_drain_tells_rebooting_how_many_daemon_set_pods_it_saw() -> None:
    drained = DrainSeen(DrainState.FINISHED, completed=True, message="ok", daemon_set_pods=3)
    step = step_for(lease(Phase.DRAINING), drain=drained)
    assert step.target is Phase.REBOOTING and step.changes["daemon_set_pods"] == 3
    skipped = step_for(
        lease(Phase.DRAINING),
        the_spec=spec(drain={"enabled": False}),
        drain=DrainSeen(DrainState.NONE),
        lease_current=True,
        cordon=node(unschedulable=True),
    )
    assert skipped.target is Phase.REBOOTING and skipped.changes["daemon_set_pods"] is None


def test_health_check_waits_for_a_view_that_shows_the_new_boot() -> None:
    """A Node view older than the node's return (another brain moved it to HealthCheck) would
    record the reboot at the old boot, and the planner would admit the node again (found by
    the rollout model test)."""
    checking = lease(Phase.HEALTH_CHECK)
    assert step_for(checking, node(boot_id="boot-a")) == Step(StepKind.WAIT, wake_in=5.0)
    assert asks(step_for(checking, node(boot_id="boot-b"))) is Need.DAEMON_SETS


def test_health_check_waits_for_the_control_plane_to_clear_not_ready() -> None:
    tainted = node(taints=(Taint(contract.CONTROL_PLANE_NOT_READY_TAINT_KEYS[0], "", "NoExecute"),))
    checking = rebooted(Phase.HEALTH_CHECK, deadline=NOW + timedelta(seconds=3))
    step = step_for(checking, tainted)
    assert step.kind is StepKind.WAIT and step.wake_in == 3.0
    assert step.record_message is not None and "clear not-ready" in step.record_message
    # The message is written once: the same again is no lock write.
    same = checking.model_copy(update={"message": step.record_message})
    assert step_for(same, tainted).record_message is None
    timed_out = step_for(checking, tainted, deadline_passed=True)
    assert timed_out.target is Phase.FAILED and timed_out.reason == "HealthGateTimeout"


def test_health_check_asks_the_pdbs_then_the_daemon_sets() -> None:
    checking = rebooted(Phase.HEALTH_CHECK, pdbs=["ns/web"])
    gate = spec(reboot={"healthGate": {"daemonSetsReady": True}})
    assert asks(step_for(checking, the_spec=gate)) is Need.PDBS
    unhealthy = step_for(checking, the_spec=gate, pdbs=Check(False, "ns/web: 0 of 1"))
    assert unhealthy.record_message == "waiting for ns/web: 0 of 1" and unhealthy.wake_in == 5.0
    late = step_for(checking, the_spec=gate, pdbs=Check(False, "x"), deadline_passed=True)
    assert late.target is Phase.FAILED and late.reason == "HealthGateTimeout"
    assert asks(step_for(checking, the_spec=gate, pdbs=Check(True))) is Need.DAEMON_SETS
    done = step_for(checking, the_spec=gate, pdbs=Check(True), daemon_sets=Check(True))
    assert done.target is Phase.DONE
    # Without PDBs recorded, none is asked.
    assert asks(step_for(rebooted(Phase.HEALTH_CHECK), the_spec=gate)) is Need.DAEMON_SETS


def test_health_check_waits_for_the_post_reboot_hook_until_its_deadline() -> None:
    hooked = spec(hooks={"postReboot": {"url": "http://hook.example/post"}})
    checking = rebooted(Phase.HEALTH_CHECK, message="waiting for the postReboot hook: HTTP 503")
    assert asks(step_for(checking, the_spec=hooked)) is Need.HOOK
    pending = HookSeen(HookAnswer.FAILED, "HTTP 503")
    waiting = step_for(checking, the_spec=hooked, hook=pending)
    assert waiting.kind is StepKind.WAIT and waiting.record_message is None
    failed = step_for(checking, the_spec=hooked, hook=pending, deadline_passed=True)
    assert failed.target is Phase.FAILED and failed.reason == "PostRebootHookFailed"
    assert failed.message.endswith("HTTP 503")


# -- Failed and a person's actions --------------------------------------------------------------


def test_a_failed_node_keeps_its_slot() -> None:
    assert step_for(lease(Phase.FAILED)) == Step(StepKind.WAIT)


def acting(action: str, the_lease: NodeLease, **fields: Any) -> NodeView:
    return node(action=action, action_since=the_lease.since.isoformat(), **fields)


def test_retry_of_a_failed_node_drains_it_again_as_a_new_attempt() -> None:
    failed = lease(Phase.FAILED, job_name="job-1", attempt=2, pdbs=["a/b"])
    step = step_for(failed, acting("retry", failed, boot_id="boot-a"))
    assert step.kind is StepKind.MOVE and step.target is Phase.DRAINING and step.reason == "Retry"
    assert step.changes["attempt"] == 3 and step.changes["job_name"] == ""
    assert step.changes["pdbs"] == [] and step.changes["boot_id_before"] == "boot-a"
    assert step.clear_action and step.delete_job == "job-1"


@pytest.mark.parametrize(
    "phase", [Phase.DRAINING, Phase.REBOOTING, Phase.WAITING_FOR_NODE, Phase.HEALTH_CHECK]
)
def test_retry_of_a_node_that_is_not_failed_is_refused_then_its_phase_steps(phase: Phase) -> None:
    the_lease = lease(phase)
    the_node = acting("retry", the_lease)
    step = step_for(the_lease, the_node)
    assert step.kind is StepKind.REFUSE_ACTION and f"it is {phase}" in step.message
    after = step_for(the_lease, the_node, action_refused=True)
    assert after.kind is not StepKind.REFUSE_ACTION


@pytest.mark.parametrize(
    "phase",
    [Phase.DRAINING, Phase.REBOOTING, Phase.WAITING_FOR_NODE, Phase.HEALTH_CHECK, Phase.FAILED],
)
def test_release_frees_the_slot_from_every_phase(phase: Phase) -> None:
    the_lease = lease(phase, job_name="job-1")
    step = step_for(the_lease, acting("release", the_lease))
    assert step.kind is StepKind.FINISH and step.reason == "Released" and step.uncordon
    assert step.target is Phase.PENDING and step.cancel_drain and step.clear_action
    assert step.retry_after == NOW + SPEC.drain.timeout  # not rebooted: it rests
    has_job = phase in (Phase.REBOOTING, Phase.WAITING_FOR_NODE, Phase.FAILED)
    assert step.delete_job == ("job-1" if has_job else "")


def test_a_node_released_after_its_reboot_does_not_rest() -> None:
    the_lease = lease(Phase.HEALTH_CHECK)
    step = step_for(the_lease, acting("release", the_lease, boot_id="boot-b"))
    assert step.retry_after is None and step.message.endswith("the health gate is skipped")


def test_an_action_for_an_earlier_phase_is_refused_and_never_replayed() -> None:
    the_lease = lease(Phase.WAITING_FOR_NODE)
    old = node(action="release", action_since=(ADMITTED - timedelta(minutes=1)).isoformat())
    step = step_for(the_lease, old)
    assert step.kind is StepKind.REFUSE_ACTION and "earlier phase" in step.message


def test_an_action_for_a_later_phase_than_our_lock_shows_reads_the_lock_again() -> None:
    the_lease = lease(Phase.DRAINING)
    later = ADMITTED + timedelta(minutes=1)
    the_node = node(action="release", action_since=later.isoformat())
    assert asks(step_for(the_lease, the_node)) is Need.LOCK_LEASE
    moved_on = the_lease.model_copy(update={"phase": Phase.REBOOTING, "since": later})
    assert step_for(the_lease, the_node, lock_read=True, lock_lease=moved_on) == Step(
        StepKind.WAIT, wake_in=0
    )
    # The lock has no such phase: the action is for an unknown phase, refused.
    same = step_for(the_lease, the_node, lock_read=True, lock_lease=the_lease)
    assert same.kind is StepKind.REFUSE_ACTION


def test_an_unknown_action_is_refused() -> None:
    the_lease = lease(Phase.FAILED)
    step = step_for(the_lease, acting("reboot-now", the_lease))
    assert step.kind is StepKind.REFUSE_ACTION and "unknown action" in step.message


# -- the transition table is enforced -------------------------------------------------------------


def test_an_illegal_transition_is_refused_with_a_log_line_naming_the_node(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = LockState(nodes={"n1": lease(Phase.HEALTH_CHECK)})
    with pytest.raises(IllegalTransitionError, match="n1"):
        move_lease(state, "n1", state.nodes["n1"], Phase.REBOOTING, NOW, "again?", {})
    assert state.nodes["n1"].phase is Phase.HEALTH_CHECK  # nothing written
    assert "node n1: illegal transition HealthCheck -> Rebooting refused" in caplog.text
    waiting = lease(Phase.WAITING_FOR_NODE)
    state.nodes["n1"] = waiting
    with pytest.raises(IllegalTransitionError):
        finish_lease(state, "n1", waiting, NOW, "Rebooted", "", True, "boot-b", None)
    assert "n1" in state.nodes


def test_every_step_the_decider_can_choose_is_a_legal_transition() -> None:
    """Each MOVE/FINISH step in the examples above goes through the check without raising."""
    for phase, targets in TRANSITIONS.items():
        for target in targets:
            check_transition("n1", phase, target)
    assert admission_lease(node(), "w", SPEC, NOW, False, "").phase is Phase.DRAINING


def test_a_move_applies_only_to_the_lease_as_the_step_saw_it() -> None:
    seen = lease(Phase.DRAINING)
    moved_on = seen.model_copy(update={"since": NOW})  # another brain wrote a later visit
    state = LockState(nodes={"n1": moved_on})
    assert not move_lease(state, "n1", seen, Phase.REBOOTING, NOW, "drained", {})
    assert state.nodes["n1"] == moved_on
    state.nodes["n1"] = seen
    assert move_lease(state, "n1", seen, Phase.REBOOTING, NOW, "drained", {"job_name": "j"})
    assert state.nodes["n1"].phase is Phase.REBOOTING and state.nodes["n1"].since == NOW
