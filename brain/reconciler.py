"""One reconcile pass for a window, level-triggered: re-read everything, decide, apply.

A pass reads the windows and Nodes (kopf indexes, kept current by watches) and the lock, asks
the planner what may happen, and applies it: the pending taint, admissions (a lock write that
re-plans on the freshest lock, so a budget can never be exceeded), one step per node in
maintenance, and the window's status. No pass depends on an earlier one having run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from brain import node_updates
from brain.core.clock import ClusterClock
from brain.core.lease_writes import admission_lease
from brain.core.lock_state import LockState, LockUnreadableError, WindowRecord
from brain.core.node_view import NodeView, Taint
from brain.core.phase import Phase
from brain.core.planner import NamedWindow, Plan, WindowPlan, make_plan
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
from brain.kube import Kube
from brain.lock import LockStore
from brain.status_writer import StatusWriter

log = logging.getLogger("pitstop.reconciler")
GROUP, VERSION, PLURAL = "pitstop.dev", "v1alpha1", "nodesmaintenancewindows"
STATUS_WRITE_INTERVAL_SECONDS = 2.0
BlockerCheck = Callable[[str, WindowSpec, list[NodeView]], Any]
# Why the window's reboot Job would be refused (brain/reboot/job_check.py), or None.
JobCheck = Callable[[str, WindowSpec], Awaitable[str | None]]


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
    _skew_told: set[str] = field(default_factory=set)
    _written_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    _status_written_at: dict[str, float] = field(default_factory=dict)
    _plan_errors: dict[str, str] = field(default_factory=dict)  # logged once per error

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
        if entry is None:
            return
        await self._tell_clock_skew(entry)
        if name in valid and self.check_reboot_job is not None:
            # A window whose reboot Job would be refused is invalid before a node is touched.
            refusal = await self.check_reboot_job(name, valid[name].spec)
            if refusal:
                invalid[name] = f"NodesMaintenanceWindow {name!r} cannot be carried out: {refusal}"
        if name in invalid:
            await self._write_status(
                entry,
                invalid_status(_conditions(entry.status), entry.generation, invalid[name], now),
            )
            await self._advance_leases(name, lock, node_list, None, now)
            return
        spec = valid[name].spec
        if self.prepare_window is not None:
            await self.prepare_window(name, spec)
        plan = make_plan(list(valid.values()), node_list, lock, now)
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
                plan = make_plan(list(valid.values()), node_list, lock, now, blockers, held_nodes)
                window_plan = plan.window(name)
        await self._sync_pending_taints(plan, window_plan, node_list, lock, spec)
        if window_plan.starts:
            lock = await self._admit(name, entry, valid, node_list, now, blockers, held_nodes)

        async def hand_off() -> HandOff:
            # A node is about to free a slot: the blockers are asked now if this pass has not.
            if self.check_blockers is not None and name not in blockers:
                await ask_blockers()
            return HandOff(
                self._admission(name, entry, valid, node_list, blockers, held_nodes),
                lambda state, admitted: self._announce_started(name, state, admitted),
            )

        self.flow.hand_offs[name] = hand_off
        try:
            await self._advance_leases(name, lock, node_list, spec, now)
        finally:
            self.flow.hand_offs.pop(name, None)
        lock = await self.lock.read()
        plan = make_plan(
            list(valid.values()), node_list, lock, self.clock.now(), blockers, held_nodes
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

    async def _sync_pending_taints(
        self,
        plan: Plan,
        window_plan: WindowPlan,
        nodes: list[NodeView],
        lock: LockState,
        spec: WindowSpec,
    ) -> None:
        pending_anywhere = {item.name for wp in plan.windows for item in wp.pending}
        by_name = {node.name: node for node in nodes}
        # A node about to be admitted is not tainted first: its cordon comes a moment later.
        starting = {start.node for start in window_plan.starts}
        taint = node_updates.pending_taint(spec)  # None: switched off (reboot.pendingTaint)
        for item in window_plan.pending:
            node = by_name.get(item.name)
            if node is not None and item.name not in starting and taint is not None:
                await node_updates.set_pending_taint(self.kube, node, present=True, taint=taint)
        keys = node_updates.pending_taint_keys(spec)
        for node in nodes:
            waiting = node.name in pending_anywhere or node.name in lock.nodes
            if not waiting and plan.governing.get(node.name) in (window_plan.name, None):
                for key in keys:
                    if node.has_taint(key):
                        await node_updates.set_pending_taint(self.kube, node, False, Taint(key))
            elif node.name in pending_anywhere and node.name in window_plan.governed:
                # A waiting node keeps only the taint its window asks for now.
                for key in keys:
                    if node.has_taint(key) and (taint is None or key != taint.key):
                        await node_updates.set_pending_taint(self.kube, node, False, Taint(key))

    def _admission(
        self,
        name: str,
        entry: WindowEntry,
        windows: Mapping[str, NamedWindow],
        nodes: list[NodeView],
        blockers: Mapping[str, str | None],
        held_nodes: Mapping[str, str],
    ) -> Callable[[LockState, datetime, str | None], list[str]]:
        """Admit into a lock state what the plan made on that same state lets start.

        The plan is re-made on the state the write will land on (budgets, delays, nodes that
        rest after an aborted drain or a reboot just recorded), so no admission can exceed a
        budget, whichever write it rides on. `uncordoned` is a node this brain has just
        uncordoned (not counted unhealthy for a cordon the index may still show). Returns the
        names admitted.
        """
        by_name = {node.name: node for node in nodes}
        spec = windows[name].spec

        def admit(state: LockState, now: datetime, uncordoned: str | None = None) -> list[str]:
            current = [
                replace(node, unschedulable=False) if node.name == uncordoned else node
                for node in nodes
            ]
            fresh_plan = make_plan(
                list(windows.values()), current, state, now, blockers, held_nodes
            )
            if name in fresh_plan.errors:
                return []
            fresh = fresh_plan.window(name)
            for start in fresh.starts:
                node = by_name[start.node]
                state.nodes[start.node] = admission_lease(
                    node, name, spec, now, start.emergency, start.domain
                )
            if fresh.starts:
                state.windows.setdefault(name, WindowRecord()).spec = dict(entry.spec)
            return [start.node for start in fresh.starts]

        return admit

    async def _admit(
        self,
        name: str,
        entry: WindowEntry,
        windows: Mapping[str, NamedWindow],
        nodes: list[NodeView],
        now: datetime,
        blockers: Mapping[str, str | None],
        held_nodes: Mapping[str, str],
    ) -> LockState:
        """Take slots in the lock; the plan is re-made on whatever lock the write lands on."""
        admit = self._admission(name, entry, windows, nodes, blockers, held_nodes)
        admitted: list[str] = []

        def decide(state: LockState) -> LockState | None:
            admitted[:] = admit(state, now, None)
            return state if admitted else None

        state = await self.lock.update(decide)
        await self._announce_started(name, state, admitted)
        return state

    async def _announce_started(self, name: str, state: LockState, admitted: list[str]) -> None:
        for node_name in admitted:
            lease = state.nodes[node_name]
            why = "emergency" if lease.emergency else "window open"
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
        if self.status_writer is not None and not self.status_writer.is_writer:
            # Another brain writes window status; ours would flap it. Once elected, we
            # compare with what the index shows, not with what we last wrote.
            self._written_status.pop(entry.name, None)
            return
        body = status.to_api()
        for key in ("nextWindowStart", "nextWindowEnd"):
            body.setdefault(key, None)
        comparable = {key: value for key, value in body.items() if value is not None}
        current = {key: value for key, value in entry.status.items() if value is not None}
        if comparable == current or self._written_status.get(entry.name) == comparable:
            return
        # At most one status write per window every STATUS_WRITE_INTERVAL: a burst of
        # transitions (several nodes moving at once) becomes one write, a moment later.
        since_last = time.monotonic() - self._status_written_at.get(entry.name, 0.0)
        if since_last < STATUS_WRITE_INTERVAL_SECONDS:
            self.flow.wake(STATUS_WRITE_INTERVAL_SECONDS - since_last)
            return
        self._status_written_at[entry.name] = time.monotonic()
        await self.kube.call(
            self.kube.custom.patch_cluster_custom_object_status,
            GROUP,
            VERSION,
            PLURAL,
            entry.name,
            {"status": body},
            _content_type="application/merge-patch+json",
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
