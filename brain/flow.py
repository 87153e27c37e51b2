"""One node's way through maintenance: the executor of the phase decider's steps.

`brain/core/decide.py` chooses each step (pure); NodeFlow finds out what a decision needs (the
drain task, the API's answer on the cordon, the Job, hooks, the health gate) and carries the
step out: the lock write first (`brain/core/lease_writes.py`, every phase change checked
against `phase.TRANSITIONS`), then the API calls it allows.

Every step is written to the lock before it is taken and every step is idempotent, so a brain
that crashes anywhere resumes from the lock: a second cordon or Job create changes nothing, a
drain resumes where the pods are, and a reboot already done (new boot ID) is never repeated.

    Pending -> Draining -> Rebooting -> WaitingForNode -> HealthCheck -> Done
                  |  (drain aborted: back to Pending)      |                |
                  +---------------> Failed <---------------+----------------+
    Rebooting -> Draining when the node is found uncordoned (it is never rebooted so).
    WaitingForNode -> HealthCheck -> Done in one lock write when the health gate (reads only,
    without a postReboot hook) passes as the node returns.
    Failed -> Draining (retry); any phase -> released (slot freed) by a person.

A drain or a reboot Job happens only on a node the API shows cordoned: the cordon patch's
response before each drain start, the Node watch while it runs, one Node read before the Job.
What this process remembers of a node is keyed by the lease (see lease_memory), so another
brain's write makes it void instead of stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from brain import node_updates
from brain.core.clock import ClusterClock
from brain.core.decide import (
    FEEDS_BACK,
    JOB_CHECK_INTERVAL_SECONDS,
    JOB_CHECK_URGENT_SECONDS,
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
from brain.core.lease_writes import (
    TransitionObserver,
    check_transitions,
    finish_lease,
    move_lease,
    update_lease,
)
from brain.core.lock_state import LockState, NodeLease
from brain.core.node_view import NodeView, node_view_from_object
from brain.core.phase import Phase
from brain.core.selectors import EVERYTHING
from brain.core.window import WindowSpec
from brain.drain import budgets, evictions
from brain.drain.budget_watch import SharedBudgets
from brain.drain.classify import DrainOptions
from brain.events import EventRecorder, node_reference, window_reference
from brain.integrations.hooks import Hook, HookCaller, HookEndpoint
from brain.kube import Kube
from brain.lease_memory import LeaseKey, LeaseMemory
from brain.lock import LockStore
from brain.reboot import node_health, reboot_job
from brain.settings import BrainSettings

log = logging.getLogger("pitstop.flow")
# How long a node this brain uncordoned counts as uncordoned for admissions whatever the Node
# views show: they lag the uncordon by the watch's delay (well under a second; seconds under
# load). Short, so that a person's cordon right after ours is soon counted again.
UNCORDON_VIEW_LAG_SECONDS = 10.0
# A lease is trusted for a first cordon only if the lock was read or written this recently;
# older, the lock is read again first (another brain may have finished the node meanwhile).
LOCK_FRESH_SECONDS = 3.0
# A decision asks for a handful of facts at most; more means a decider that never decides.
MAX_DECISIONS_PER_PASS = 16
# Steps that post no Event of their own (each Event is a request): a person reads a node's
# maintenance from two, Started and its outcome (Rebooted, or the warning that stopped it). The
# steps in between (Drained, RebootStarted, NodeReturned) are in the lease's message (window
# status, `pitstop status`), the log and the metrics.
QUIET_TRANSITIONS = frozenset(
    {
        (Phase.DRAINING, Phase.REBOOTING),
        (Phase.REBOOTING, Phase.WAITING_FOR_NODE),
        (Phase.WAITING_FOR_NODE, Phase.HEALTH_CHECK),
    }
)
# Transitions a person asked for: told on the window too.
PERSON_ACTIONS = frozenset({"Retry", "Released"})


@dataclass
class _Pass:
    """One node's pass: what `advance` was given, and the drain result it took (its remaining
    pods are what a force-delete deletes)."""

    name: str
    lease: NodeLease
    node: NodeView | None
    spec: WindowSpec
    now: datetime
    key: LeaseKey
    drain_result: evictions.DrainResult | None = None


@dataclass(frozen=True)
class HandOff:
    """The next nodes of a window, admitted in the same lock write that frees a slot.

    `admit(state, now, uncordoned)` adds to the lock state being written whatever the planner,
    re-run on that very state, lets start (so the budget holds as for any admission) and
    returns their names; `uncordoned` names the nodes this brain uncordoned a moment ago (the
    pass's Node views may not show it yet). `announce` tells of them once the write landed.
    """

    admit: Callable[[LockState, datetime, frozenset[str]], list[str]]
    announce: Callable[[LockState, list[str]], Awaitable[None]]


@dataclass
class NodeFlow:
    kube: Kube
    lock: LockStore
    settings: BrainSettings
    events: EventRecorder
    wake: Callable[[float], None]
    observer: TransitionObserver = field(default_factory=TransitionObserver)
    hooks: HookCaller = field(default_factory=HookCaller)
    # The API server's time: every deadline is judged by it (`clock.past`), never by this
    # host's wall clock, and none before the clock's first sample.
    clock: ClusterClock = field(default_factory=ClusterClock)
    # Every memory below is per lease (node, attempt, phase start): see lease_memory.
    drains: LeaseMemory[asyncio.Task[evictions.DrainResult]] = field(default_factory=LeaseMemory)
    # uids make `kubectl describe` find our Events (it matches the object's uid)
    window_uids: dict[str, str] = field(default_factory=dict)
    node_uids: dict[str, str] = field(default_factory=dict)
    _job_checked: LeaseMemory[float] = field(default_factory=LeaseMemory)
    # Seen NotReady while WaitingForNode. Kept in memory, not in the lock: a brain that
    # restarts meanwhile forgets it, and a node that never reboots then fails at
    # nodeReturnTimeout instead of at once (later, never wrongly).
    _saw_not_ready: LeaseMemory[bool] = field(default_factory=LeaseMemory)
    # This process started a drain for the lease: starting another one (it was stopped, or it
    # failed) reads the lock first, whatever its age.
    _drain_started: LeaseMemory[bool] = field(default_factory=LeaseMemory)
    # This process cordoned the node for the lease: if the lease turns out gone (another brain
    # finished it meanwhile), that cordon is undone.
    _cordoned: LeaseMemory[bool] = field(default_factory=LeaseMemory)
    _node_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # window -> how to admit its next nodes when one of its nodes frees a slot (set by the
    # reconciler for the length of a pass; without one, the next pass admits them).
    hand_offs: dict[str, Callable[[], Awaitable[HandOff]]] = field(default_factory=dict)
    # Nodes this brain uncordoned when it released them, and when (monotonic): for a few
    # seconds the Node views a pass planned with may still show them cordoned, so unavailable,
    # and an admission would leave their freed slots empty until the next pass.
    _uncordoned_at: dict[str, float] = field(default_factory=dict)

    def recently_uncordoned(self) -> frozenset[str]:
        """Nodes this brain uncordoned within the last UNCORDON_VIEW_LAG_SECONDS."""
        horizon = time.monotonic() - UNCORDON_VIEW_LAG_SECONDS
        for name in [name for name, at in self._uncordoned_at.items() if at < horizon]:
            del self._uncordoned_at[name]
        return frozenset(self._uncordoned_at)

    # One PodDisruptionBudget watch for every drain and health gate while they use it: a
    # reboot then reads no budget of its own (brain/drain/budget_watch.py).
    _budgets: SharedBudgets | None = None

    @property
    def budgets(self) -> SharedBudgets:
        if self._budgets is None:
            self._budgets = SharedBudgets(self.kube.json)
        return self._budgets

    @property
    def own_pods(self) -> frozenset[tuple[str, str]]:
        """The brain's own pod, which its drains never evict (see BrainSettings.pod_name)."""
        if not self.settings.pod_name:
            return frozenset()
        return frozenset({(self.settings.namespace, self.settings.pod_name)})

    # -- entry point ---------------------------------------------------------------------------

    async def advance(
        self, name: str, lease: NodeLease, node: NodeView | None, spec: WindowSpec, now: datetime
    ) -> None:
        """Take the next step for one node in maintenance, if its situation allows one.

        The decider (brain/core/decide.py) chooses; this method finds out what it asks for
        and carries its step out.
        """
        lock = self._node_locks.setdefault(name, asyncio.Lock())
        if lock.locked():
            return  # another task of this brain is stepping this node right now
        async with lock:
            if node is None:
                # Not in our index (yet): only a 404 from the API proves the node is gone.
                node = await self._read_node(name)
            key = LeaseKey.of(name, lease)
            if node is not None and lease.phase is Phase.WAITING_FOR_NODE and not node.ready:
                self._saw_not_ready.put(key, True)
            context = _Pass(name, lease, node, spec, now, key)
            seen = Observations(
                deadline_passed=self.clock.past(lease.deadline, now),
                saw_not_ready=key in self._saw_not_ready,
            )
            for _ in range(MAX_DECISIONS_PER_PASS):
                step = decide(lease, node, spec, seen, now)
                if step.kind not in FEEDS_BACK:
                    await self._carry_out(context, step)
                    return
                seen = await self._learn(context, step, seen)
            raise RuntimeError(f"node {name}: no step decided in {MAX_DECISIONS_PER_PASS} tries")

    async def _read_node(self, name: str) -> NodeView | None:
        try:
            return node_view_from_object(await node_updates.read_node_raw(self.kube, name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def forget(self, name: str) -> None:
        """Drop in-memory helpers of a node that left maintenance."""
        task = self.drains.pop(name)
        if task is not None and not task.done():
            task.cancel()
        for memory in (self._job_checked, self._saw_not_ready, self._drain_started, self._cordoned):
            memory.pop(name)

    async def close(self) -> None:
        tasks = self.drains.values()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self.drains.clear()
        if self._budgets is not None:
            await self._budgets.close()

    # -- what the decider asks to know ---------------------------------------------------------

    async def _learn(self, context: _Pass, step: Step, seen: Observations) -> Observations:
        """Carry out a step whose answer the decider needs; the observations with it added."""
        name, lease, node, spec = context.name, context.lease, context.node, context.spec
        assert node is not None  # a deleted node is finished without asking anything
        if step.kind is StepKind.REFUSE_ACTION:
            await self.refuse_action(node, step.message)
            return replace(seen, action_refused=True)
        if step.kind is StepKind.CORDON:
            cordoned = await node_updates.cordon_and_mark(
                self.kube, node, lease.window, self.settings.kured_compatibility, spec
            )
            self._cordoned.put(context.key, True)
            return replace(seen, cordon=cordoned)
        if step.kind is StepKind.FORCE_DELETE:
            assert context.drain_result is not None
            deleted = await evictions.force_delete(
                self.kube.api_client,
                context.drain_result.remaining,
                spec.drain.grace_period_seconds,
            )
            return replace(seen, force_deleted=deleted)
        if step.kind is StepKind.CREATE_JOB:
            return replace(seen, job_created=await self._create_job(name, lease, spec))
        need = step.need
        if need is Need.DRAIN:
            return replace(seen, drain=self._drain_seen(context))
        if need is Need.CORDONED_NOW:
            # The index can lag our own cordon by a moment; only the API's answer stops a drain.
            current = await self._read_node(name)
            return replace(seen, cordoned_now=current is None or current.unschedulable)
        if need is Need.HOOK:
            return replace(seen, hook=await self._poll_hook(context))
        if need is Need.LEASE_CURRENT:
            return replace(seen, lease_current=await self._lease_is_current(name, lease))
        if need is Need.FRESH_NODE:
            return replace(seen, fresh_node_read=True, fresh_node=await self._read_node(name))
        if need is Need.JOB:
            job = await self._job_state(name, lease, urgent=step.urgent)
            if job is None:
                return replace(seen, job=JobSeen.NOT_READ)
            return replace(seen, job=JobSeen(job.phase.value), job_message=job.message)
        if need is Need.PDBS:
            healthy, message = await budgets.pdbs_healthy(
                self.kube.api_client, lease.pdbs, await self.budgets.view()
            )
            return replace(seen, pdbs=Check(healthy, message))
        if need is Need.DAEMON_SETS:
            ready, message = await node_health.daemonset_pods_ready(self.kube.api_client, name)
            return replace(seen, daemon_sets=Check(ready, message))
        if need is Need.LOCK_LEASE:
            current_lease = (await self.lock.refresh()).nodes.get(name)
            return replace(seen, lock_read=True, lock_lease=current_lease)
        raise AssertionError(f"node {name}: the decider asked for {step}")

    def _drain_seen(self, context: _Pass) -> DrainSeen:
        """The drain task of this lease (one of an earlier phase visit is stopped)."""
        outdated = self.drains.take_outdated(context.key)
        if outdated is not None:  # a drain of an earlier phase visit (another brain moved on)
            outdated.cancel()
        task = self.drains.get(context.key)
        if task is None:
            return DrainSeen(DrainState.NONE)
        if not task.done():
            return DrainSeen(DrainState.RUNNING)
        self.drains.pop(context.name)
        try:
            result = task.result()
        except asyncio.CancelledError:
            return DrainSeen(DrainState.CANCELLED)
        except Exception as error:
            return DrainSeen(DrainState.ERROR, error=str(error))
        context.drain_result = result
        return DrainSeen(
            DrainState.FINISHED,
            completed=result.completed,
            problems=bool(result.problems),
            message=result.message,
            pdbs=tuple(result.pdbs),
            blocking_pdbs=tuple(result.blocking_pdbs),
            daemon_set_pods=result.daemon_set_pods,
        )

    async def _poll_hook(self, context: _Pass) -> HookSeen:
        """The phase's hook (preDrain while Draining, postReboot in HealthCheck). Never waits
        for the call: a call under way or a retry to come is HookAnswer.PENDING."""
        lease, node, spec = context.lease, context.node, context.spec
        assert node is not None
        hook = Hook.PRE_DRAIN if lease.phase is Phase.DRAINING else Hook.POST_REBOOT
        endpoint = spec.hooks.pre_drain if hook is Hook.PRE_DRAIN else spec.hooks.post_reboot
        assert endpoint is not None
        status = await self.hooks.poll(
            hook,
            HookEndpoint(endpoint.url, endpoint.timeout.total_seconds(), endpoint.retries),
            window=lease.window,
            node=context.name,
            boot_id=node.boot_id,
            phase=str(lease.phase),
            wake=lambda: self.wake(0),
        )
        return HookSeen(HookAnswer(status.state.value), status.message, status.retry_in_seconds)

    async def _lease_is_current(self, name: str, lease: NodeLease) -> bool:
        """Before a cordon: is this lease still the lock's? Read again unless just seen.

        A drain started before for this very lease (now stopped) always reads again: it was
        stopped because the node was uncordoned, maybe by a brain that finished the node.
        """
        key = LeaseKey.of(name, lease)
        recent = time.monotonic() - self.lock.synced_at < LOCK_FRESH_SECONDS
        if recent and key not in self._drain_started:
            return True
        current = (await self.lock.refresh()).nodes.get(name)
        return (
            current is not None
            and current.phase == lease.phase
            and LeaseKey.of(name, current) == key
        )

    async def _job_state(
        self, name: str, lease: NodeLease, urgent: bool
    ) -> reboot_job.JobState | None:
        """The reboot Job's state, read at most every JOB_CHECK_* seconds per node."""
        key = LeaseKey.of(name, lease)
        checked = self._job_checked.get(key) or 0.0
        interval = JOB_CHECK_URGENT_SECONDS if urgent else JOB_CHECK_INTERVAL_SECONDS
        if not lease.job_name or time.monotonic() - checked < interval:
            return None
        self._job_checked.put(key, time.monotonic())
        return await reboot_job.reboot_job_state(
            self.kube.api_client, self.settings.job_namespace, lease.job_name
        )

    async def _create_job(self, name: str, lease: NodeLease, spec: WindowSpec) -> JobCreated:
        """The reboot Job under the name recorded at the Drained step (409: it is ours)."""
        job = reboot_job.build_reboot_job(
            name,
            lease.boot_id_before,
            spec.reboot.method,
            self.settings.job_namespace,
            self.settings.job_image,
            lease.window,
            job_template=spec.reboot.job_template,
            host_agent_directory=self.settings.host_agent_directory,
        )
        if lease.job_name:
            job["metadata"]["name"] = lease.job_name  # the name recorded before this step
        created = await reboot_job.ensure_reboot_job(self.kube.api_client, job)
        job_name = str(job["metadata"]["name"])
        return JobCreated(job_name, f"{self.settings.job_namespace}/{job_name}", created)

    # -- carrying a step out -------------------------------------------------------------------

    async def _carry_out(self, context: _Pass, step: Step) -> None:
        """Do what the decider chose: the lock write first, then the API calls it allows."""
        name, lease, node, spec, now = (
            context.name,
            context.lease,
            context.node,
            context.spec,
            context.now,
        )
        if step.log:
            log.warning("%s", step.log)
        if step.kind is StepKind.WAIT:
            if step.record_message is not None:
                await self._update(name, lease, message=step.record_message)
            if step.wake_in is not None:
                self.wake(step.wake_in)
        elif step.kind is StepKind.STOP_DRAIN:
            task = self.drains.pop(name)
            if task is not None:
                task.cancel()
            self.wake(step.wake_in or 0)
        elif step.kind is StepKind.START_DRAIN:
            assert step.drain_deadline is not None
            self._start_drain(name, spec, step.drain_deadline, context.key)
        elif step.kind is StepKind.MOVE:
            assert step.target is not None
            changes = dict(step.changes)
            if step.name_job:
                # One Job per maintenance (lease.since is this drain's start): never an old one.
                changes["job_name"] = reboot_job.maintenance_job_name(
                    name, str(changes["boot_id_before"]), lease.attempt, lease.since
                )
            moved = await self._move(
                name, lease, step.target, now, step.reason, step.message, **changes
            )
            if moved and step.clear_action and node is not None:
                await node_updates.clear_action(self.kube, node)
            if moved and step.delete_job:
                await self._delete_job(step.delete_job)
            if moved and step.target is Phase.WAITING_FOR_NODE and "job_name" in changes:
                # A Job just created has not failed yet: its first read is one pace away.
                self._job_checked.put(LeaseKey(name, lease.attempt, now), time.monotonic())
        elif step.kind is StepKind.FINISH:
            if step.cancel_drain:
                task = self.drains.pop(name)
                if task is not None:
                    task.cancel()
            if step.delete_job:
                await self._delete_job(step.delete_job)
            await self._finish(
                name,
                lease,
                node,
                now,
                step.reason,
                step.message,
                uncordon=step.uncordon,
                succeeded=step.succeeded,
                retry_after=step.retry_after,
                clear_action=step.clear_action,
                spec=spec if step.with_labels else None,
                through=step.through,
            )
        else:
            raise AssertionError(f"node {name}: no way to carry out {step}")

    def _start_drain(self, name: str, spec: WindowSpec, deadline: datetime, key: LeaseKey) -> None:
        """The drain in a task (the node is cordoned: the decider saw the patch's answer)."""
        options = DrainOptions(
            grace_period_seconds=spec.drain.grace_period_seconds,
            pod_selector=(
                spec.drain.pod_selector.selector if spec.drain.pod_selector else EVERYTHING
            ),
            delete_emptydir_data=spec.drain.delete_empty_dir_data,
            force=spec.drain.force,
            keep_pods=self.own_pods,
        )
        task = asyncio.create_task(
            self._drain(name, options, self.clock.to_local(deadline)),  # by this host's clock
            name=f"drain-{name}",
        )
        task.add_done_callback(lambda _: self.wake(0))
        self.drains.put(key, task)
        self._drain_started.put(key, True)

    async def _drain(
        self, name: str, options: DrainOptions, deadline: datetime
    ) -> evictions.DrainResult:
        """The drain, holding the brain's shared budget watch from its start to its end."""
        budget_watch = self.budgets.acquire()
        try:
            return await evictions.drain_node(
                self.kube.api_client,
                name,
                options,
                deadline,
                watch_list=True,
                budget_watch=budget_watch,
            )
        finally:
            self.budgets.release()

    async def _delete_job(self, job_name: str) -> None:
        """Delete the Job of a visit that ends or starts over: it never reboots the node late."""
        await reboot_job.delete_reboot_job(
            self.kube.api_client, self.settings.job_namespace, job_name
        )

    # -- what a person asked for ---------------------------------------------------------------

    async def refuse_action(self, node: NodeView, why: str) -> None:
        """Remove an action the brain will not carry out, and say why on the node."""
        if await node_updates.clear_action(self.kube, node):
            await self.events.post(
                node_reference(node.name, self.node_uids.get(node.name, node.uid)),
                "ActionRefused",
                why,
                "Warning",
            )

    async def refuse_stray_actions(self, nodes: list[NodeView], window: str) -> None:
        """Actions on nodes of `window` that are not in maintenance: refused and removed.

        The lock is read again first (rare: only when such an action is there), so a node that
        another brain has just admitted is not refused by a copy of the lock a moment old.
        """
        if not nodes:
            return
        state = await self.lock.refresh()
        for node in nodes:
            if node.name not in state.nodes:
                await self.refuse_action(
                    node,
                    f"the node is not in maintenance (window {window}): nothing to {node.action}",
                )

    # -- lock writes ---------------------------------------------------------------------------

    async def _update(self, name: str, lease: NodeLease, **changes: Any) -> bool:
        """Change fields of a lease that is still exactly as we saw it."""
        return await self._write_lease(
            name, lease, lambda state: update_lease(state, name, lease, changes)
        )

    async def _write_lease(
        self, name: str, lease: NodeLease, edit: Callable[[LockState], bool]
    ) -> bool:
        """Apply `edit` (see brain/core/lease_writes.py) to the lock; did it apply?"""
        applied = gone = False

        def decide(state: LockState) -> LockState | None:
            nonlocal applied, gone
            gone = name not in state.nodes  # decide runs again on a fresh lock after a 409
            applied = edit(state)
            return state if applied else None

        await self.lock.update(decide)
        if gone:
            await self._undo_stale_cordon(name, lease)
        return applied

    async def _undo_stale_cordon(self, name: str, lease: NodeLease) -> None:
        """The lease is gone (another brain finished the node): undo a cordon we made for it.

        Only if the node still carries our window mark (the finishing brain removed it; our
        cordon after that put it back), so a node cordoned by anyone since is left alone.
        """
        if LeaseKey.of(name, lease) not in self._cordoned:
            return
        self.forget(name)
        if await node_updates.unmark_if_marked(
            self.kube, name, lease.window, uncordon=not lease.was_cordoned
        ):
            log.warning("node %s: its lease was gone; undid the cordon made for it", name)

    async def _move(
        self,
        name: str,
        lease: NodeLease,
        target: Phase,
        now: datetime,
        reason: str,
        message: str,
        **changes: Any,
    ) -> bool:
        moved = await self._write_lease(
            name, lease, lambda state: move_lease(state, name, lease, target, now, message, changes)
        )
        if moved:
            self._job_checked.pop(name)
            await self.announce(
                lease.window, name, lease.phase, target, reason, message, warning=False, lease=lease
            )
            self.wake(0)
        return moved

    async def _finish(
        self,
        name: str,
        lease: NodeLease,
        node: NodeView | None,
        now: datetime,
        reason: str,
        message: str,
        uncordon: bool,
        succeeded: bool = False,
        retry_after: datetime | None = None,
        clear_action: bool = False,
        spec: WindowSpec | None = None,
        through: Phase | None = None,
    ) -> None:
        """Undo our marks on the node, THEN free the slot (a crash in between re-does it).
        With the window's `spec`, its nodeLabels change in the same patch. `through`: a phase
        passed through in the same write (told to the observer as its own transition)."""
        target = Phase.DONE if succeeded else Phase.PENDING
        check_transitions(name, lease.phase, target, through)  # before the node is touched
        if node is not None:
            patch = node_updates.release_patch(
                uncordon=uncordon and not lease.was_cordoned,
                clear_action=clear_action,
                labels=node_updates.labels_on_release(spec, succeeded) if spec else None,
            )
            try:
                await node_updates.merge_patch_node(self.kube, name, patch)
                await node_updates.remove_pending_taints(self.kube, node, spec or WindowSpec())
            except ApiException as error:
                if error.status != 404:
                    raise
            else:
                if uncordon and not lease.was_cordoned:
                    self._uncordoned_at[name] = time.monotonic()
        prepare = self.hand_offs.get(lease.window)
        hand_off = await prepare() if prepare is not None else None
        applied = False
        admitted: list[str] = []

        def decide(state: LockState) -> LockState | None:
            nonlocal applied
            applied = False  # decide runs again on a fresh lock after a 409
            admitted.clear()
            if not finish_lease(
                state,
                name,
                lease,
                now,
                reason,
                message,
                succeeded,
                boot_id=node.boot_id if node else "",
                retry_after=retry_after,
                through=through,
            ):
                return None
            if hand_off is not None:  # the freed slot goes to the next node in this write
                admitted.extend(hand_off.admit(state, now, self.recently_uncordoned()))
            applied = True
            return state

        written = await self.lock.update(decide)
        if applied:
            self.forget(name)
            self.hooks.forget(name, lease.window)
            old = lease.phase
            if through is not None:  # WaitingForNode -> HealthCheck, the gate passed at once
                passed = "the node is Ready with a new boot ID; the health gate passed at once"
                await self.announce(
                    lease.window, name, old, through, "NodeReturned", passed, False, lease
                )
                old = through
            await self.announce(
                lease.window,
                name,
                old,
                target,
                reason,
                message,
                warning=not succeeded and reason != "Released",
                lease=None,
            )
            if hand_off is not None and admitted:
                await hand_off.announce(written, admitted)
            self.wake(0)

    async def announce(
        self,
        window: str,
        node: str,
        old: Phase,
        new: Phase,
        reason: str,
        message: str,
        warning: bool,
        lease: NodeLease | None,
    ) -> None:
        """Tell the observer of every transition; post Events for the ones a person reads.

        Each Event is a request, so only the steps that matter get one: on the Node, maintenance
        started (cordoned, draining) and the outcome (the steps between are logged); on the
        window, what needs a person (warnings, Failed) and what a person did
        (retry, release). The window's own story is its status (per-node phases) and the
        Events of its conditions (opened, blocked, degraded, rollout complete).
        """
        warning = warning or new == Phase.FAILED
        kind: Any = "Warning" if warning else "Normal"
        if not warning and (old, new) in QUIET_TRANSITIONS:
            log.info("node %s: %s -> %s: %s: %s", node, old, new, reason, message)
        else:
            await self.events.post(
                node_reference(node, self.node_uids.get(node, "")),
                reason,
                f"{old} -> {new}: {message}",
                kind,
            )
        if warning or reason in PERSON_ACTIONS:
            await self.events.post(
                window_reference(window, self.window_uids.get(window, "")),
                reason,
                f"{node}: {old} -> {new}: {message}",
                kind,
            )
        self.observer.transition(window, node, old, new, reason, message, lease)
