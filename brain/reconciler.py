"""One reconcile pass for a window, level-triggered: re-read everything, decide, apply.

A pass reads the windows (kopf's index) and the Nodes (brain/node_watch.py), both kept current
by watches, and the lock, asks the planner what may happen, and applies it: admissions (a lock
write that re-plans on the freshest lock, so a budget can never be exceeded), then the pending
taints (written in the background: admission never waits for them), one step per node in
maintenance, and the window's status. No pass depends on an earlier one having run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from brain.core.api import GROUP, PLURAL, VERSION
from brain.core.clock import ClusterClock
from brain.core.lease_writes import admission_lease
from brain.core.lock_state import LockState, LockUnreadableError, WindowRecord, continues_rollout
from brain.core.node_view import NodeView
from brain.core.phase import Phase
from brain.core.planner import Assignment, NamedWindow, Plan, governing_of, make_plan
from brain.core.status import degraded_status, invalid_status, window_status
from brain.core.window import (
    Condition,
    ConditionStatus,
    ConditionType,
    WindowSpec,
    WindowSpecError,
    parse_window_spec,
)
from brain.events import EventRecorder, window_reference
from brain.flow import HandOff, NodeFlow
from brain.kube import MERGE_PATCH, Kube
from brain.lock import LockStore
from brain.pending_taints import PendingTaintWriter, taint_changes
from brain.status_writer import StatusWriter

log = logging.getLogger("pitstop.reconciler")
STATUS_WRITE_INTERVAL_SECONDS = 2.0
# Started Events posted at once when many nodes are admitted together.
ANNOUNCE_AT_ONCE = 16
BlockerCheck = Callable[[str, WindowSpec, list[NodeView]], Any]


class JobCheck(Protocol):
    """Why the window's reboot Job would be refused (brain/reboot/job_check.py), or None;
    `admitting`: a node is about to be admitted (an old verdict is asked again)."""

    def __call__(
        self, window: str, spec: WindowSpec, admitting: bool = False
    ) -> Awaitable[str | None]: ...


def _admit_nothing(state: LockState, now: datetime, uncordoned: frozenset[str]) -> list[str]:
    """The hand-off's admission for a window whose reboot Job is refused: nobody."""
    return []


@dataclass(frozen=True)
class WindowEntry:
    """What the window index keeps of a NodesMaintenanceWindow."""

    name: str
    uid: str
    generation: int
    spec: Mapping[str, Any]
    status: Mapping[str, Any]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> WindowEntry:
        metadata = body.get("metadata") or {}
        return cls(
            name=str(metadata.get("name", "")),
            uid=str(metadata.get("uid", "")),
            generation=int(metadata.get("generation") or 0),
            spec=dict(body.get("spec") or {}),
            status=dict(body.get("status") or {}),
        )


def _conditions(status: Mapping[str, Any]) -> list[Condition]:
    result = []
    for raw in status.get("conditions") or []:
        try:
            result.append(Condition.model_validate(raw))
        except ValueError:
            continue
    return result


def _condition_status(conditions: Iterable[Condition], kind: ConditionType) -> str:
    for condition in conditions:
        if condition.type == kind:
            return str(condition.status)
    return ""


# Window-level Events: (condition, new status) -> (reason, Warning?)
WINDOW_EVENTS: dict[tuple[ConditionType, str], tuple[str, bool]] = {
    (ConditionType.WINDOW_OPEN, "True"): ("WindowOpened", False),
    (ConditionType.WINDOW_OPEN, "False"): ("WindowClosed", False),
    (ConditionType.BLOCKED, "True"): ("Blocked", True),
    (ConditionType.BLOCKED, "False"): ("Unblocked", False),
    (ConditionType.DEGRADED, "True"): ("Degraded", True),
    (ConditionType.DEGRADED, "False"): ("Recovered", False),
    (ConditionType.CONFLICT, "True"): ("Conflict", True),
    (ConditionType.READY, "False"): ("InvalidSpec", True),
}


@dataclass
class WindowReconciler:
    kube: Kube
    lock: LockStore
    flow: NodeFlow
    events: EventRecorder
    check_blockers: BlockerCheck | None = None
    on_plan: Callable[[Plan, LockState, list[NodeView]], None] | None = None
    prepare_window: Callable[[str, WindowSpec], Any] | None = None
    on_window_event: Callable[[str, str, str], None] | None = None
    check_reboot_job: JobCheck | None = None
    # "now" of every pass: the API server's time (see brain/core/clock.py), the same in every brain.
    clock: ClusterClock = field(default_factory=ClusterClock)
    # Only the elected brain writes window status and its condition Events (None: this one).
    status_writer: StatusWriter | None = None
    # Pending taints, written in the background of passes (None: one made on this kube).
    taint_writer: PendingTaintWriter | None = None
    _taints: PendingTaintWriter = field(init=False)
    _skew_told: set[str] = field(default_factory=set)
    _written_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    _status_written_at: dict[str, float] = field(default_factory=dict)
    _plan_errors: dict[str, str] = field(default_factory=dict)  # logged once per error

    def __post_init__(self) -> None:
        self._taints = self.taint_writer or PendingTaintWriter(
            self.kube, in_maintenance=self.lock.holds
        )

    async def close(self) -> None:
        """Stop the taint writes still queued (the next brain's passes decide them again)."""
        await self._taints.close()

    async def reconcile(
        self, name: str, windows: Mapping[str, WindowEntry], nodes: Iterable[NodeView]
    ) -> None:
        """One pass for window `name`. An unreadable lock makes it Degraded (no step is taken,
        nothing is written to the lock) and the pass is tried again after the lock's back-off."""
        try:
            await self._reconcile(name, windows, list(nodes))
        except LockUnreadableError as error:
            entry = windows.get(name)
            if entry is not None:
                await self._write_status(
                    entry,
                    degraded_status(
                        entry.status,
                        entry.generation,
                        "LockUnreadable",
                        str(error),
                        self.clock.now(),
                    ),
                )
            self.flow.wake(max(self.lock.seconds_until_retry(), 0.1))

    async def _reconcile(
        self, name: str, windows: Mapping[str, WindowEntry], node_list: list[NodeView]
    ) -> None:
        entry = windows.get(name)
        now = self.clock.now()
        self.flow.window_uids.update({key: value.uid for key, value in windows.items()})
        self.flow.node_uids.update({node.name: node.uid for node in node_list})
        valid, invalid = self._parse(windows)
        lock = await self.lock.read()
        planned_on = self.lock.version  # the lock this pass plans on (no await in between)
        if entry is None:
            return
        await self._tell_clock_skew(entry)
        if name in valid:
            # A window whose reboot Job would be refused is invalid before a node is touched.
            # Known from an earlier dry run (asked only for a Job shape not seen yet); a refusal
            # is asked again, once old, while a flagged node waits for it.
            refusal = await self._job_refusal(name, valid[name].spec, admitting=False)
            if refusal and any(
                node.reboot_required and node.name not in lock.nodes for node in node_list
            ):
                refusal = await self._job_refusal(name, valid[name].spec, admitting=True)
            if refusal:
                invalid[name] = refusal
        if name in invalid:
            await self._invalid(entry, invalid[name], lock, node_list, now)
            return
        spec = valid[name].spec
        if self.prepare_window is not None:
            await self.prepare_window(name, spec)
        # The pass plans once; it plans again only on a lock that changed meanwhile (and each
        # admission on the lock it writes over). Who governs whom is worked out once for all.
        windows_now = list(valid.values())
        assignment = governing_of(windows_now, node_list)
        plan = make_plan(windows_now, node_list, lock, now, assignment=assignment)
        if name in plan.errors:
            await self._plan_failed(entry, plan.errors[name], lock, node_list, spec, now)
            return
        self._plan_errors.pop(name, None)
        window_plan = plan.window(name)
        blockers: dict[str, str | None] = {}
        held_nodes: dict[str, str] = {}  # scope-Node blockers: node -> why only it waits

        async def ask_blockers() -> None:
            assert self.check_blockers is not None
            governed = [node for node in node_list if node.name in window_plan.governed]
            verdict = await self.check_blockers(name, spec, governed)
            blockers[name] = verdict.window
            held_nodes.update(verdict.nodes)

        if any(not start.emergency for start in window_plan.starts) and self.check_blockers:
            await ask_blockers()
            if blockers[name] or held_nodes:
                plan = make_plan(
                    windows_now, node_list, lock, now, blockers, held_nodes, assignment
                )
                window_plan = plan.window(name)
        planned_with = (dict(blockers), dict(held_nodes))
        admission = self._admission(name, entry, valid, node_list, assignment, blockers, held_nodes)
        if window_plan.starts:
            # A node is about to be admitted: the dry run is asked again if its verdict is old.
            refusal = await self._job_refusal(name, spec, admitting=True)
            if refusal:
                await self._invalid(entry, refusal, lock, node_list, now)
                return
            lock = await self._admit(name, admission, now)
        # After admission, never before it: written in the background while the pass goes on.
        self._taints.submit(taint_changes(plan, window_plan, node_list, lock, spec))

        async def hand_off() -> HandOff:
            # A node is about to free a slot: the blockers are asked now if this pass has not
            # (`admission` reads them when it runs).
            if self.check_blockers is not None and name not in blockers:
                await ask_blockers()
            admit = admission
            if await self._job_refusal(name, spec, admitting=True):
                admit = _admit_nothing  # the next pass shows the window invalid
            return HandOff(
                admit, lambda state, admitted: self._announce_started(name, state, admitted)
            )

        self.flow.hand_offs[name] = hand_off
        try:
            await self._advance_leases(name, lock, node_list, spec, now)
        finally:
            self.flow.hand_offs.pop(name, None)
        lock = await self.lock.read()
        if self.lock.version != planned_on or planned_with != (blockers, held_nodes):
            plan = make_plan(
                windows_now, node_list, lock, self.clock.now(), blockers, held_nodes, assignment
            )
        if name in plan.errors:
            await self._plan_failed(
                entry, plan.errors[name], lock, node_list, spec, self.clock.now()
            )
            return
        window_plan = plan.window(name)
        # A person's action on a node of this window that is not in maintenance: refused.
        await self.flow.refuse_stray_actions(
            [
                node
                for node in node_list
                if node.action
                and node.name not in lock.nodes
                and plan.governing.get(node.name) == name
            ],
            name,
        )
        if self.on_plan is not None:
            self.on_plan(plan, lock, node_list)
        status = window_status(
            window_plan, lock, _conditions(entry.status), entry.generation, self.clock.now()
        )
        await self._write_status(entry, status)

    async def _job_refusal(self, name: str, spec: WindowSpec, admitting: bool) -> str | None:
        """Why the window cannot be carried out because the API server refuses its reboot Job
        (brain/reboot/job_check.py), or None. Asked for a Job shape not seen yet and, when
        `admitting`, again once the verdict is old: an idle brain asks nothing."""
        if self.check_reboot_job is None:
            return None
        refusal = await self.check_reboot_job(name, spec, admitting)
        if not refusal:
            return None
        return f"NodesMaintenanceWindow {name!r} cannot be carried out: {refusal}"

    async def _invalid(
        self,
        entry: WindowEntry,
        why: str,
        lock: LockState,
        nodes: list[NodeView],
        now: datetime,
    ) -> None:
        """Ready False with `why`; nothing starts, and nodes in maintenance finish with the spec
        recorded at their admission."""
        await self._write_status(
            entry, invalid_status(_conditions(entry.status), entry.generation, why, now)
        )
        await self._advance_leases(entry.name, lock, nodes, None, now)

    async def _plan_failed(
        self,
        entry: WindowEntry,
        error: str,
        lock: LockState,
        nodes: list[NodeView],
        spec: WindowSpec,
        now: datetime,
    ) -> None:
        """The planner failed on this window alone (its spec or its record in the lock): its
        nodes in flight still finish, nothing of it starts, it is Degraded with the error."""
        if self._plan_errors.get(entry.name) != error:
            log.warning("window %s: its plan failed, nothing of it starts: %s", entry.name, error)
            self._plan_errors[entry.name] = error
        await self._advance_leases(entry.name, lock, nodes, spec, now)
        message = f"the brain cannot plan this window: {error}"
        await self._write_status(
            entry, degraded_status(entry.status, entry.generation, "PlanFailed", message, now)
        )

    async def reconcile_orphans(
        self, windows: Mapping[str, WindowEntry], nodes: Iterable[NodeView]
    ) -> None:
        """Nodes in flight whose window was deleted finish with the spec they started with."""
        try:
            lock = await self.lock.read()
            node_list = list(nodes)
            orphans = {lease.window for lease in lock.nodes.values() if lease.window not in windows}
            for window in orphans:
                record = lock.windows.get(window, WindowRecord())
                try:
                    spec = parse_window_spec(record.spec or {}, window)
                except WindowSpecError:
                    spec = WindowSpec()
                await self._advance_leases(window, lock, node_list, spec, self.clock.now())
        except LockUnreadableError:
            return  # the lock logs it (once per back-off); each window shows it as Degraded

    # -- steps ---------------------------------------------------------------------------------

    def _parse(
        self, windows: Mapping[str, WindowEntry]
    ) -> tuple[dict[str, NamedWindow], dict[str, str]]:
        valid: dict[str, NamedWindow] = {}
        invalid: dict[str, str] = {}
        for window_name, entry in windows.items():
            try:
                valid[window_name] = NamedWindow(
                    window_name, parse_window_spec(entry.spec, window_name)
                )
            except WindowSpecError as error:
                invalid[window_name] = str(error)
        return valid, invalid

    def _admission(
        self,
        name: str,
        entry: WindowEntry,
        windows: Mapping[str, NamedWindow],
        nodes: list[NodeView],
        assignment: Assignment,
        blockers: Mapping[str, str | None],
        held_nodes: Mapping[str, str],
    ) -> Callable[[LockState, datetime, frozenset[str]], list[str]]:
        """Admit into a lock state what the plan made on that same state lets start.

        The plan is re-made on the state the write will land on (budgets, delays, nodes that
        rest after an aborted drain or a reboot just recorded), so no admission can exceed a
        budget, whichever write it rides on. `uncordoned` is a node this brain has just
        uncordoned (not counted unhealthy for a cordon the views may still show). Returns the
        names admitted. The re-plan reuses the pass's `assignment` (who governs whom: the
        windows and the nodes' labels have not changed) and leaves out the preview's batches.
        `blockers` and `held_nodes` are read when it runs (a hand-off may ask them first).
        """
        by_name = {node.name: node for node in nodes}
        spec = windows[name].spec
        window_list = list(windows.values())

        def admit(state: LockState, now: datetime, uncordoned: frozenset[str]) -> list[str]:
            current = nodes
            if any(by_name[name].unschedulable for name in uncordoned if name in by_name):
                current = [
                    replace(node, unschedulable=False) if node.name in uncordoned else node
                    for node in nodes
                ]
            fresh_plan = make_plan(
                window_list, current, state, now, blockers, held_nodes, assignment, batches=False
            )
            if name in fresh_plan.errors:
                return []
            fresh = fresh_plan.window(name)
            # Decided before the new leases go in: the rollout goes on, or this starts one.
            continuing = bool(fresh.starts) and continues_rollout(
                state, name, (pending.since for pending in fresh.pending), now
            )
            for start in fresh.starts:
                node = by_name[start.node]
                state.nodes[start.node] = admission_lease(
                    node, name, spec, now, start.emergency, start.domain
                )
            if fresh.starts:
                record = state.windows.setdefault(name, WindowRecord())
                record.spec = dict(entry.spec)
                record.admitted(now, continuing)
            return [start.node for start in fresh.starts]

        return admit

    async def _admit(
        self,
        name: str,
        admit: Callable[[LockState, datetime, frozenset[str]], list[str]],
        now: datetime,
    ) -> LockState:
        """Take slots in the lock; the plan is re-made on whatever lock the write lands on."""
        admitted: list[str] = []

        def decide(state: LockState) -> LockState | None:
            admitted[:] = admit(state, now, self.flow.recently_uncordoned())
            return state if admitted else None

        state = await self.lock.update(decide)
        await self._announce_started(name, state, admitted)
        return state

    async def _announce_started(self, name: str, state: LockState, admitted: list[str]) -> None:
        """The Started Event of each admitted node, ANNOUNCE_AT_ONCE at a time: one after the
        other, 100 admissions held the first cordon back by 1.7 s at 1,000 nodes."""
        at_once = asyncio.Semaphore(ANNOUNCE_AT_ONCE)

        async def announce(node_name: str) -> None:
            lease = state.nodes[node_name]
            why = "emergency" if lease.emergency else "window open"
            async with at_once:
                await self.flow.announce(
                    name,
                    node_name,
                    Phase.PENDING,
                    Phase.DRAINING,
                    "Started",
                    f"maintenance started ({why}): cordoning and draining",
                    warning=False,
                    lease=lease,
                )

        await asyncio.gather(*(announce(node_name) for node_name in admitted))

    async def _advance_leases(
        self,
        window: str,
        lock: LockState,
        nodes: list[NodeView],
        spec: WindowSpec | None,
        now: datetime,
    ) -> None:
        by_name = {node.name: node for node in nodes}
        record = lock.windows.get(window)
        if spec is None:  # an invalid spec now: finish what started with the spec it had
            try:
                spec = parse_window_spec((record.spec if record else None) or {}, window)
            except WindowSpecError:
                spec = WindowSpec()
        steps = [
            self.flow.advance(node_name, lease, by_name.get(node_name), spec, now)
            for node_name, lease in lock.nodes.items()
            if lease.window == window
        ]
        results = await asyncio.gather(*steps, return_exceptions=True)
        for result in results:
            if isinstance(result, LockUnreadableError):
                raise result  # told once by the lock and by the window's status, not per node
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.warning("window %s: a node step failed, retried next pass: %r", window, result)

    async def _tell_clock_skew(self, entry: WindowEntry) -> None:
        """A brain on a host whose clock is off says so once on each window (it still works:
        it reasons in the API server's time); the log line and the metric are the clock's."""
        if not self.clock.skewed or entry.name in self._skew_told:
            return
        self._skew_told.add(entry.name)
        await self.events.post(
            window_reference(entry.name, entry.uid),
            "ClockSkew",
            f"the brain on {self.events.host or 'its host'} has a clock "
            f"{self.clock.skew_seconds():+.0f} s off the API server's (more than "
            f"{self.clock.skew_warning_seconds:.0f} s); it judges deadlines by the API "
            "server's time; fix the host's clock (NTP)",
            "Warning",
        )

    async def _write_status(self, entry: WindowEntry, status: Any) -> None:
        writer = self.status_writer
        if writer is not None and not writer.holds_lease:
            # Another brain may write window status: compare with what the index shows, not
            # with what we last wrote.
            self._written_status.pop(entry.name, None)
        body = status.to_api()
        for key in ("nextWindowStart", "nextWindowEnd"):
            body.setdefault(key, None)
        comparable = {key: value for key, value in body.items() if value is not None}
        current = {key: value for key, value in entry.status.items() if value is not None}
        # Nothing to write, nothing asked: the status writer's Lease is held on demand, so an
        # idle brain (or a follower that sees what the holder wrote) sends no request.
        if comparable == current or self._written_status.get(entry.name) == comparable:
            return
        # At most one status write per window every STATUS_WRITE_INTERVAL: a burst of
        # transitions (several nodes moving at once) becomes one write, a moment later.
        since_last = time.monotonic() - self._status_written_at.get(entry.name, 0.0)
        if since_last < STATUS_WRITE_INTERVAL_SECONDS:
            self.flow.wake(STATUS_WRITE_INTERVAL_SECONDS - since_last)
            return
        if writer is not None and not await writer.may_write():
            # Another brain holds the Lease; ours would flap the status. Ask again later while
            # the status still differs: the holder writes it meanwhile, or its Lease expires.
            self._written_status.pop(entry.name, None)
            self.flow.wake(writer.seconds_until_next_look())
            return
        self._status_written_at[entry.name] = time.monotonic()
        await self.kube.patch(
            f"/apis/{GROUP}/{VERSION}/{PLURAL}/{entry.name}/status",
            {"status": body},
            MERGE_PATCH,
        )
        self._written_status[entry.name] = comparable
        await self._window_events(entry, _conditions(entry.status), status.conditions)

    async def _window_events(
        self, entry: WindowEntry, before: list[Condition], after: list[Condition]
    ) -> None:
        reference = window_reference(entry.name, entry.uid)
        for condition in after:
            kind = ConditionType(condition.type)
            old = _condition_status(before, kind)
            new = str(condition.status)
            # A condition False from the start is no news, except Ready: an invalid new window.
            if old == new or (not old and new == "False" and kind != ConditionType.READY):
                continue
            event = WINDOW_EVENTS.get((kind, new))
            if event is not None:
                reason, warning = event
                await self.events.post(
                    reference, reason, condition.message, "Warning" if warning else "Normal"
                )
                if self.on_window_event is not None:
                    self.on_window_event(entry.name, reason, condition.message)
        was_progressing = _condition_status(before, ConditionType.PROGRESSING) == "True"
        progressing = _condition_status(after, ConditionType.PROGRESSING)
        if was_progressing and progressing == ConditionStatus.FALSE:
            reason_now = next((c.reason for c in after if c.type == ConditionType.PROGRESSING), "")
            if reason_now == "Idle":
                await self.events.post(
                    reference, "RolloutComplete", "every flagged node was handled"
                )
                if self.on_window_event is not None:
                    self.on_window_event(entry.name, "RolloutComplete", "")
