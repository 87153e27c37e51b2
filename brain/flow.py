"""One node's way through maintenance: the step each phase takes.

Every step is written to the lock before it is taken and every step is idempotent, so a brain
that crashes anywhere resumes from the lock: a second cordon or Job create changes nothing, a
drain resumes where the pods are, and a reboot already done (new boot ID) is never repeated.

    Pending -> Draining -> Rebooting -> WaitingForNode -> HealthCheck -> Done
                  |  (drain aborted: back to Pending)      |                |
                  +---------------> Failed <---------------+----------------+
    Rebooting -> Draining when the node is found uncordoned (it is never rebooted so).
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
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from brain import node_updates
from brain.core.clock import ClusterClock
from brain.core.lock_state import CompletedReboot, LockState, NodeLease, WindowRecord
from brain.core.node_view import NodeView, node_view_from_object
from brain.core.phase import Phase
from brain.core.selectors import EVERYTHING
from brain.core.window import EmergencyDrain, OnTimeout, WindowSpec, format_duration
from brain.drain import budgets, evictions
from brain.drain.classify import DrainOptions
from brain.events import EventRecorder, node_reference, window_reference
from brain.integrations.hooks import Hook, HookCaller, HookEndpoint, HookState
from brain.kube import Kube
from brain.lease_memory import LeaseKey, LeaseMemory
from brain.lock import LockStore
from brain.reboot import node_health, reboot_job
from brain.settings import BrainSettings
from pitstop import contract

log = logging.getLogger("pitstop.flow")
# The reboot Job is read at this pace while the node is away (a failed Job fails the node
# early; the node's own return is seen through the Node watch, not by polling) ...
JOB_CHECK_INTERVAL_SECONDS = 30.0
# ... and at this pace once the node is Ready again with its old boot ID (did it reboot?).
JOB_CHECK_URGENT_SECONDS = 5.0
POLL_AGAIN_SECONDS = 2.0
# A lease is trusted for a first cordon only if the lock was read or written this recently;
# older, the lock is read again first (another brain may have finished the node meanwhile).
LOCK_FRESH_SECONDS = 3.0
HEALTH_GATE_POLL_SECONDS = 5.0
# Steps that post no Event of their own: the next step's Event says what they did (Drained is
# told by RebootStarted; NodeReturned by Rebooted, or by the warning that stops the node).
QUIET_TRANSITIONS = frozenset(
    {
        (Phase.DRAINING, Phase.REBOOTING),
        (Phase.WAITING_FOR_NODE, Phase.HEALTH_CHECK),
    }
)
# Transitions a person asked for: told on the window too.
PERSON_ACTIONS = frozenset({"Retry", "Released"})
# Phases a person may release a node from (every phase that holds a slot), and what it means.
RELEASE_MEANS = {
    Phase.DRAINING: "the drain is stopped",
    Phase.REBOOTING: "no reboot is started",
    Phase.WAITING_FOR_NODE: "the wait is given up and the reboot Job deleted",
    Phase.HEALTH_CHECK: "the health gate is skipped",
    Phase.FAILED: "",
}


@dataclass(frozen=True)
class HandOff:
    """The next nodes of a window, admitted in the same lock write that frees a slot.

    `admit(state, now, uncordoned)` adds to the lock state being written whatever the planner,
    re-run on that very state, lets start (so the budget holds as for any admission) and
    returns their names; `uncordoned` names the node just uncordoned (the index may not show
    it yet). `announce` tells of them once the write landed.
    """

    admit: Callable[[LockState, datetime, str | None], list[str]]
    announce: Callable[[LockState, list[str]], Awaitable[None]]


class FlowObserver:
    """Told of every transition; metrics and notifications subclass it. This one does nothing."""

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


@dataclass
class NodeFlow:
    kube: Kube
    lock: LockStore
    settings: BrainSettings
    events: EventRecorder
    wake: Callable[[float], None]
    observer: FlowObserver = field(default_factory=FlowObserver)
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
        """Take the next step for one node in maintenance, if its situation allows one."""
        lock = self._node_locks.setdefault(name, asyncio.Lock())
        if lock.locked():
            return  # another task of this brain is stepping this node right now
        async with lock:
            if node is None:
                # Not in our index (yet): only a 404 from the API proves the node is gone.
                node = await self._read_node(name)
            if node is None:
                await self._finish(
                    name,
                    lease,
                    None,
                    now,
                    "NodeDeleted",
                    "the node was deleted while in maintenance",
                    uncordon=False,
                )
                return
            if node.action and await self._person_action(name, lease, node, spec, now):
                return
            step = {
                Phase.DRAINING: self._draining,
                Phase.REBOOTING: self._rebooting,
                Phase.WAITING_FOR_NODE: self._waiting_for_node,
                Phase.HEALTH_CHECK: self._health_check,
                Phase.FAILED: self._failed,
            }.get(lease.phase)
            if step is not None:
                await step(name, lease, node, spec, now)

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

    # -- phases --------------------------------------------------------------------------------

    async def _draining(
        self, name: str, lease: NodeLease, node: NodeView | None, spec: WindowSpec, now: datetime
    ) -> None:
        assert node is not None
        key = LeaseKey.of(name, lease)
        outdated = self.drains.take_outdated(key)
        if outdated is not None:  # a drain of an earlier phase visit (another brain moved on)
            outdated.cancel()
        task = self.drains.get(key)
        if task is not None and not task.done():
            if not node.unschedulable and not await self._cordoned_now(name):
                # Someone uncordoned it (a person, or another brain that finished it): evicting
                # now would chase the workloads' replacements back onto it.
                task.cancel()
                self.drains.pop(name)
                log.warning("node %s was uncordoned during its drain: drain stopped", name)
                self.wake(0)
            return
        if task is None:
            await self._start_drain(name, lease, node, spec, now, key)
            return
        self.drains.pop(name)
        try:
            result = task.result()
        except asyncio.CancelledError:
            self.wake(0)
            return
        except Exception as error:
            log.warning("drain of node %s failed, will retry: %s", name, error)
            self.wake(POLL_AGAIN_SECONDS)
            return
        if result.completed:
            await self._to_rebooting(
                name, lease, node, now, pdbs=list(result.pdbs), note=result.message
            )
            return
        deadline_passed = self.clock.past(lease.deadline, now)
        if result.problems or (deadline_passed and spec.drain.on_timeout == OnTimeout.ABORT):
            await self._finish(
                name,
                lease,
                node,
                now,
                "DrainAborted",
                result.message,
                uncordon=True,
                retry_after=now + spec.drain.timeout,
                spec=spec,
            )
        elif deadline_passed:
            deleted = await evictions.force_delete(
                self.kube.api_client, result.remaining, spec.drain.grace_period_seconds
            )
            await self._to_rebooting(
                name,
                lease,
                node,
                now,
                pdbs=sorted({*result.pdbs, *result.blocking_pdbs}),
                note=f"drain timed out; force-deleted {deleted} pods ({result.message})",
            )
        else:
            self.wake(POLL_AGAIN_SECONDS)  # the drain ended early (an error): start again

    async def _start_drain(
        self,
        name: str,
        lease: NodeLease,
        node: NodeView,
        spec: WindowSpec,
        now: datetime,
        key: LeaseKey,
    ) -> None:
        """Cordon (the patch's answer must show it), then start the drain in a task."""
        if spec.hooks.pre_drain is not None and not await self._hook_passed(
            Hook.PRE_DRAIN,
            spec.hooks.pre_drain,
            name,
            lease,
            node,
            now,
            on_failure=lambda message: self._finish(
                name,
                lease,
                node,
                now,
                "PreDrainHookFailed",
                message,
                uncordon=True,
                retry_after=now + spec.drain.timeout,
                spec=spec,
            ),
        ):
            return
        if not await self._lease_is_current(name, lease, key):
            return
        cordoned = await node_updates.cordon_and_mark(
            self.kube, node, lease.window, self.settings.kured_compatibility, spec
        )
        self._cordoned.put(key, True)
        if not cordoned.unschedulable:
            log.warning("node %s: the cordon did not hold; trying again", name)
            self.wake(POLL_AGAIN_SECONDS)
            return
        skip_drain = not spec.drain.enabled or (
            lease.emergency and spec.emergency.drain == EmergencyDrain.SKIP
        )
        if skip_drain:
            await self._to_rebooting(name, lease, cordoned, now, pdbs=[], note="drain skipped")
            return
        deadline = lease.deadline or now + spec.drain.timeout
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
            evictions.drain_node(
                self.kube.api_client,
                name,
                options,
                self.clock.to_local(deadline),  # the drain waits by this host's clock
                watch_list=True,
            ),
            name=f"drain-{name}",
        )
        task.add_done_callback(lambda _: self.wake(0))
        self.drains.put(key, task)
        self._drain_started.put(key, True)

    async def _lease_is_current(self, name: str, lease: NodeLease, key: LeaseKey) -> bool:
        """Before a cordon: is this lease still the lock's? Read again unless just seen.

        A drain started before for this very lease (now stopped) always reads again: it was
        stopped because the node was uncordoned, maybe by a brain that finished the node.
        """
        recent = time.monotonic() - self.lock.synced_at < LOCK_FRESH_SECONDS
        if recent and key not in self._drain_started:
            return True
        current = (await self.lock.refresh()).nodes.get(name)
        if (
            current is not None
            and current.phase == lease.phase
            and LeaseKey.of(name, current) == key
        ):
            return True
        self.wake(0)
        return False

    async def _cordoned_now(self, name: str) -> bool:
        """The index shows the node schedulable while we drain it: ask the API (one GET).

        The index can lag our own cordon by a moment; only the API's answer stops a drain.
        """
        node = await self._read_node(name)
        return node is None or node.unschedulable

    async def _to_rebooting(
        self,
        name: str,
        lease: NodeLease,
        node: NodeView,
        now: datetime,
        pdbs: list[str],
        note: str,
    ) -> None:
        boot_id = node.boot_id
        if lease.boot_id_before and boot_id and boot_id != lease.boot_id_before:
            # The node rebooted since its admission (another brain finished it while this one
            # admitted it from an older view, or a person rebooted it): keep the boot it was
            # admitted at, so the Rebooting step sees the new boot and starts no second reboot.
            boot_id = lease.boot_id_before
        await self._move(
            name,
            lease,
            Phase.REBOOTING,
            now,
            "Drained",
            note,
            boot_id_before=boot_id,
            # One Job per maintenance (lease.since is this drain's start): never an old one.
            job_name=reboot_job.maintenance_job_name(name, boot_id, lease.attempt, lease.since),
            pdbs=sorted({*lease.pdbs, *pdbs}),
            deadline=None,
        )

    async def _rebooting(
        self, name: str, lease: NodeLease, node: NodeView | None, spec: WindowSpec, now: datetime
    ) -> None:
        assert node is not None
        # The Node as the API has it now, not as the index or memory last saw it (one GET).
        node = await self._read_node(name)
        if node is None:
            return  # the next pass reads the 404 again and finishes the node as deleted
        deadline = now + spec.reboot.node_return_timeout
        if node.boot_id and node.boot_id != lease.boot_id_before:
            # Rebooted already (the brain was down meanwhile): never start a second reboot.
            await self._move(
                name,
                lease,
                Phase.WAITING_FOR_NODE,
                now,
                "RebootStarted",
                "the node already reports a new boot ID",
                deadline=deadline,
            )
            return
        if not node.unschedulable:
            await self._back_to_draining(name, lease, spec, now)
            return
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
        message = f"reboot Job {self.settings.job_namespace}/{job_name} " + (
            "created" if created else "already exists"
        )
        if lease.message:  # what the drain did (the Drained step posts no Event of its own)
            message = f"{lease.message}; {message}"
        moved = await self._move(
            name,
            lease,
            Phase.WAITING_FOR_NODE,
            now,
            "RebootStarted",
            message,
            deadline=deadline,
            job_name=job_name,
        )
        if moved:  # a Job just created has not failed yet: its first read is one pace away
            self._job_checked.put(LeaseKey(name, lease.attempt, now), time.monotonic())

    async def _back_to_draining(
        self, name: str, lease: NodeLease, spec: WindowSpec, now: datetime
    ) -> None:
        """Found uncordoned before its reboot: never reboot it so; cordon and drain again."""
        why = "the node was uncordoned before its reboot: cordoning and draining it again"
        if await self._drain_again(name, lease, spec, now, "Uncordoned", why):
            # A Job created before a crash must not reboot it now; the next drain makes its own.
            await self._delete_old_job(lease)

    async def _waiting_for_node(
        self, name: str, lease: NodeLease, node: NodeView | None, spec: WindowSpec, now: datetime
    ) -> None:
        assert node is not None
        if node.boot_id and node.boot_id != lease.boot_id_before and node.ready:
            await self._move(
                name,
                lease,
                Phase.HEALTH_CHECK,
                now,
                "NodeReturned",
                f"node is Ready with a new boot ID ({node.boot_id[:8]}...)",
                deadline=now + spec.reboot.health_gate.timeout,
            )
            return
        key = LeaseKey.of(name, lease)
        if not node.ready:
            self._saw_not_ready.put(key, True)
        # (sawNotReady in the lock: written by brains before this one)
        saw_not_ready = lease.saw_not_ready or key in self._saw_not_ready
        came_back_unchanged = saw_not_ready and node.ready
        job = await self._job_state(name, lease, urgent=came_back_unchanged)
        if job is not None and job.phase == reboot_job.JobPhase.FAILED:
            await self._fail(
                name,
                lease,
                now,
                "RebootJobFailed",
                f"reboot Job {lease.job_name} failed: {job.message}",
            )
            return
        if job is not None and job.phase == reboot_job.JobPhase.SUCCEEDED and came_back_unchanged:
            await self._fail(
                name,
                lease,
                now,
                "SameBootID",
                "the node came back with the same boot ID after the reboot Job finished: it "
                "did not reboot",
            )
            return
        if self.clock.past(lease.deadline, now):
            await self._fail(
                name,
                lease,
                now,
                "NodeDidNotReturn",
                f"the node did not come back with a new boot ID and Ready within "
                f"{format_duration(spec.reboot.node_return_timeout)}",
            )
            return
        if lease.deadline is not None:
            pace = JOB_CHECK_URGENT_SECONDS if came_back_unchanged else JOB_CHECK_INTERVAL_SECONDS
            self.wake(min(pace, max((lease.deadline - now).total_seconds(), 0.1)))

    async def _hook_passed(
        self,
        hook: Hook,
        endpoint: Any,
        name: str,
        lease: NodeLease,
        node: NodeView,
        now: datetime,
        on_failure: Callable[[str], Awaitable[None]] | None,
    ) -> bool:
        """Has the window's hook said yes for this node and boot? Never waits for the call.

        While it has not, the lease's message says why the node waits; a hook that used all
        its retries calls `on_failure` (preDrain: back to Pending, uncordoned).
        """
        status = await self.hooks.poll(
            hook,
            HookEndpoint(endpoint.url, endpoint.timeout.total_seconds(), endpoint.retries),
            window=lease.window,
            node=name,
            boot_id=node.boot_id,
            phase=str(lease.phase),
            wake=lambda: self.wake(0),
        )
        if status.state == HookState.SUCCEEDED:
            return True
        message = f"waiting for the {hook} hook: {status.message or 'call under way'}"
        if status.state == HookState.FAILED and on_failure is not None:
            await on_failure(f"{hook} hook failed: {status.message}")
            return False
        if lease.message != message:
            await self._update(name, lease, message=message)
        if status.retry_in_seconds:
            self.wake(status.retry_in_seconds)
        return False

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

    async def _health_check(
        self, name: str, lease: NodeLease, node: NodeView | None, spec: WindowSpec, now: datetime
    ) -> None:
        assert node is not None
        if spec.hooks.post_reboot is not None and not await self._hook_passed(
            Hook.POST_REBOOT,
            spec.hooks.post_reboot,
            name,
            lease,
            node,
            now,
            on_failure=None,
        ):
            if self.clock.past(lease.deadline, now):
                await self._fail(
                    name,
                    lease,
                    now,
                    "PostRebootHookFailed",
                    f"postReboot hook did not succeed in time: {lease.message}",
                )
            return
        if not await self._control_plane_sees_ready(name, lease, node, now):
            return
        if spec.reboot.health_gate.pods_ready and lease.pdbs:
            healthy, message = await budgets.pdbs_healthy(self.kube.api_client, lease.pdbs)
            if not healthy:
                if self.clock.past(lease.deadline, now):
                    await self._fail(
                        name,
                        lease,
                        now,
                        "HealthGateTimeout",
                        f"health gate not passed in time: {message}",
                    )
                    return
                if lease.message != f"waiting for {message}":  # what it waits for now
                    await self._update(name, lease, message=f"waiting for {message}")
                self.wake(HEALTH_GATE_POLL_SECONDS)
                return
        if not await self._daemonsets_ready(name, lease, spec, now):
            return
        await self._finish(
            name,
            lease,
            node,
            now,
            "Rebooted",
            "rebooted, back and healthy",
            uncordon=True,
            succeeded=True,
            spec=spec,
        )

    async def _control_plane_sees_ready(
        self, name: str, lease: NodeLease, node: NodeView, now: datetime
    ) -> bool:
        """Has the control plane cleared its not-ready/unreachable taints off the node?

        A node reports Ready before the node lifecycle controller has seen it so: its
        `not-ready:NoExecute` taint stays until the controller's next pass (every 5 s by
        default). Uncordoned meanwhile, the node gets the next drain's pods, which the
        controller may then mark NotReady, and their budgets stall that drain. The Node watch
        wakes the window when the taint goes; the poll here is only a fallback.
        """
        taints = node.not_ready_taint_keys  # by key: a change of effect is no news
        if not taints:
            return True
        waiting = f"waiting for the control plane to clear not-ready ({', '.join(taints)})"
        if self.clock.past(lease.deadline, now):
            await self._fail(
                name, lease, now, "HealthGateTimeout", f"health gate not passed in time: {waiting}"
            )
            return False
        if lease.message != waiting:
            await self._update(name, lease, message=waiting)
        left = (
            (lease.deadline - now).total_seconds() if lease.deadline else HEALTH_GATE_POLL_SECONDS
        )
        self.wake(min(HEALTH_GATE_POLL_SECONDS, max(left, 0.1)))
        return False

    async def _daemonsets_ready(
        self, name: str, lease: NodeLease, spec: WindowSpec, now: datetime
    ) -> bool:
        """healthGate.daemonSetsReady: the node's DaemonSet pods Ready, within the gate's time."""
        if not spec.reboot.health_gate.daemon_sets_ready:
            return True
        ready, message = await node_health.daemonset_pods_ready(self.kube.api_client, name)
        if ready:
            return True
        if self.clock.past(lease.deadline, now):
            await self._fail(
                name, lease, now, "HealthGateTimeout", f"health gate not passed in time: {message}"
            )
            return False
        if lease.message != f"waiting for {message}":  # what it waits for now
            await self._update(name, lease, message=f"waiting for {message}")
        self.wake(HEALTH_GATE_POLL_SECONDS)
        return False

    async def _failed(
        self, name: str, lease: NodeLease, node: NodeView | None, spec: WindowSpec, now: datetime
    ) -> None:
        """A Failed node keeps its slot until a person acts (see _person_action)."""
        return None

    # -- what a person asked for ---------------------------------------------------------------

    async def _person_action(
        self, name: str, lease: NodeLease, node: NodeView, spec: WindowSpec, now: datetime
    ) -> bool:
        """Act on the node's `pitstop.dev/action`, or refuse it with an Event; remove it.

        An action asked for an earlier phase than the lease's (its `action-since` is older
        than the phase start) is stale: refused, never replayed at a later phase. Returns
        True when this pass takes no other step for the node.
        """
        asked_for = _parse_time(node.action_since)
        if asked_for is not None and asked_for > lease.since:
            # The person saw a phase our copy of the lock does not show yet: read it again.
            current = (await self.lock.refresh()).nodes.get(name)
            if current is not None and current.since >= asked_for:
                self.wake(0)
                return True
        if asked_for is not None and asked_for != lease.since:
            await self.refuse_action(
                node,
                f"{node.action} was asked for an earlier phase (started {node.action_since}); "
                f"the node is {lease.phase} since {lease.since.isoformat()}: ignored, ask again "
                "if it still applies",
            )
            return False
        if node.action == contract.ACTION_RELEASE:
            await self._release(name, lease, node, spec, now)
            return True
        if node.action == contract.ACTION_RETRY and lease.phase == Phase.FAILED:
            await self._retry(name, lease, node, spec, now)
            return True
        if node.action == contract.ACTION_RETRY:
            why = f"retry applies only to a Failed node; it is {lease.phase}"
        else:
            why = f"unknown action {node.action!r} (retry or release)"
        await self.refuse_action(node, why)
        return False

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

    async def _release(
        self, name: str, lease: NodeLease, node: NodeView, spec: WindowSpec, now: datetime
    ) -> None:
        """Give up on the node in whatever phase: no drain, no reboot, no waiting, no gate.

        A node released before it rebooted rests (retryAfter) like one whose drain was
        aborted, instead of being admitted again at once.
        """
        task = self.drains.pop(name)
        if task is not None:
            task.cancel()
        if lease.job_name and lease.phase in (
            Phase.REBOOTING,
            Phase.WAITING_FOR_NODE,
            Phase.FAILED,
        ):
            # A Job that has not rebooted the node yet must not do it once it is uncordoned.
            await reboot_job.delete_reboot_job(
                self.kube.api_client, self.settings.job_namespace, lease.job_name
            )
        rebooted = bool(lease.boot_id_before) and node.boot_id not in ("", lease.boot_id_before)
        means = RELEASE_MEANS.get(lease.phase, "")
        await self._finish(
            name,
            lease,
            node,
            now,
            "Released",
            f"released by a person in {lease.phase}" + (f": {means}" if means else ""),
            uncordon=True,
            clear_action=True,
            retry_after=None if rebooted else now + spec.drain.timeout,
            spec=spec,
        )

    async def _retry(
        self, name: str, lease: NodeLease, node: NodeView, spec: WindowSpec, now: datetime
    ) -> None:
        """A new attempt for a Failed node: drained and rebooted again, with a Job of its own."""
        moved = await self._drain_again(
            name,
            lease,
            spec,
            now,
            "Retry",
            "retry requested by a person",
            attempt=lease.attempt + 1,
            boot_id_before=node.boot_id,
            saw_not_ready=False,
            pdbs=[],
        )
        if moved:
            await node_updates.clear_action(self.kube, node)
            await self._delete_old_job(lease)  # the failed attempt's Job never reboots it late

    async def _drain_again(
        self,
        name: str,
        lease: NodeLease,
        spec: WindowSpec,
        now: datetime,
        reason: str,
        message: str,
        **changes: Any,
    ) -> bool:
        """Back to Draining with a fresh drain deadline and no Job yet: the next drain makes
        its own Job (the caller deletes the old one, see _delete_old_job)."""
        return await self._move(
            name,
            lease,
            Phase.DRAINING,
            now,
            reason,
            message,
            deadline=now + spec.drain.timeout,
            job_name="",
            **changes,
        )

    async def _delete_old_job(self, lease: NodeLease) -> None:
        """Delete the Job of a visit that starts over, so it can never reboot the node late."""
        if lease.job_name:
            await reboot_job.delete_reboot_job(
                self.kube.api_client, self.settings.job_namespace, lease.job_name
            )

    # -- lock writes ---------------------------------------------------------------------------

    async def _update(self, name: str, lease: NodeLease, **changes: Any) -> bool:
        """Change fields of a lease that is still exactly as we saw it."""
        applied = gone = False

        def decide(state: LockState) -> LockState | None:
            nonlocal applied, gone
            applied = False  # decide runs again on a fresh lock after a 409
            current = state.nodes.get(name)
            gone = current is None
            if current is None or not _same_visit(current, lease):
                return None
            state.nodes[name] = current.model_copy(update=changes)
            applied = True
            return state

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
        moved = await self._update(name, lease, phase=target, since=now, message=message, **changes)
        if moved:
            self._job_checked.pop(name)
            await self.announce(
                lease.window, name, lease.phase, target, reason, message, warning=False, lease=lease
            )
            self.wake(0)
        return moved

    async def _fail(
        self, name: str, lease: NodeLease, now: datetime, reason: str, message: str
    ) -> None:
        await self._move(name, lease, Phase.FAILED, now, reason, message)

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
    ) -> None:
        """Undo our marks on the node, THEN free the slot (a crash in between re-does it).
        With the window's `spec`, its nodeLabels change in the same patch."""
        uncordoned: str | None = None
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
                    uncordoned = name
        prepare = self.hand_offs.get(lease.window)
        hand_off = await prepare() if prepare is not None else None
        applied = False
        admitted: list[str] = []

        def decide(state: LockState) -> LockState | None:
            nonlocal applied
            applied = False  # decide runs again on a fresh lock after a 409
            admitted.clear()
            current = state.nodes.get(name)
            if current is None or not _same_visit(current, lease):
                return None
            del state.nodes[name]
            record = state.windows.setdefault(lease.window, WindowRecord())
            record.last_finished = now
            record.record(
                CompletedReboot(
                    node=name,
                    finished=now,
                    result=reason,
                    message=message,
                    boot_id=node.boot_id if node else "",
                    boot_id_before=lease.boot_id_before,
                )
            )
            if retry_after is not None:
                record.retry_after[name] = retry_after
            else:
                record.retry_after.pop(name, None)
            if hand_off is not None:  # the freed slot goes to the next node in this write
                admitted.extend(hand_off.admit(state, now, uncordoned))
            applied = True
            return state

        written = await self.lock.update(decide)
        if applied:
            self.forget(name)
            self.hooks.forget(name, lease.window)
            target = Phase.DONE if succeeded else Phase.PENDING
            await self.announce(
                lease.window,
                name,
                lease.phase,
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
        started (cordoned, draining), reboot started (what the drain did, the Job) and the
        outcome; on the window, what needs a person (warnings, Failed) and what a person did
        (retry, release). The window's own story is its status (per-node phases) and the
        Events of its conditions (opened, blocked, degraded, rollout complete).
        """
        warning = warning or new == Phase.FAILED
        kind: Any = "Warning" if warning else "Normal"
        if warning or (old, new) not in QUIET_TRANSITIONS:
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


def _same_visit(current: NodeLease, lease: NodeLease) -> bool:
    """Is the lock's lease still the phase visit we decided on (not a later one, same attempt)?"""
    return (
        current.phase == lease.phase
        and current.attempt == lease.attempt
        and current.since == lease.since
    )


def _parse_time(text: str) -> datetime | None:
    """An RFC 3339 time from an annotation; None if absent or unreadable."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
