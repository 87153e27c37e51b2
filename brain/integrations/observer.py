"""What the brain tells the outside world besides the API: metrics and notifications.

The flow and the reconciler report transitions here; this module turns them into Prometheus
metrics and apprise notifications. Nothing here can stop or slow the flow: notifications are
queued in the background and a failed send is only counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kubernetes.client.exceptions import ApiException

from brain.core.lease_writes import TransitionObserver
from brain.core.lock_state import LockState, NodeLease
from brain.core.node_view import NodeView
from brain.core.phase import Phase
from brain.core.planner import Plan
from brain.core.window import WindowSpec
from brain.integrations.blockers import BlockerResult
from brain.integrations.metrics import BrainMetrics, NodeSample, RebootResult, WindowSample
from brain.integrations.notify import MessageTemplates, Notifier, targets_from_secret_data
from brain.kube import Kube

log = logging.getLogger("pitstop.observer")
SECRET_REFRESH_SECONDS = 300.0
# pitstop_phase_duration_seconds{phase}: the four steps a person asks about.
PHASE_LABELS = {
    Phase.DRAINING: "drain",
    Phase.REBOOTING: "reboot",
    Phase.WAITING_FOR_NODE: "node_return",
    Phase.HEALTH_CHECK: "health_gate",
}
# Flow transitions -> notification event names (notify.events).
WINDOW_EVENT_NOTIFICATIONS = {
    "WindowOpened": "WindowOpened",
    "Blocked": "Blocked",
    "Conflict": "Conflict",
    "RolloutComplete": "RolloutComplete",
}


@dataclass
class _WindowNotifier:
    notifier: Notifier
    source: tuple[str, str, tuple[str, ...], str]  # secret, key, events, resourceVersion
    read_at: float


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class BrainObserver(TransitionObserver):
    kube: Kube
    namespace: str
    metrics: BrainMetrics = field(default_factory=BrainMetrics)
    blocked: dict[str, BlockerResult] = field(default_factory=dict)
    cluster_name: str = ""  # `$cluster` in notification templates (setting cluster_name)
    _notifiers: dict[str, _WindowNotifier] = field(default_factory=dict)
    # Hand-off latency: windows with nodes waiting (from the last plan), and when each last
    # freed a slot while they were; the next start in that window observes the gap.
    _waiting: frozenset[str] = frozenset()
    _freed_at: dict[str, float] = field(default_factory=dict)
    # The API server's time (phases' `since` in the lock is in it): brain/core/clock.py.
    now: Callable[[], datetime] = field(default_factory=lambda: _utc_now)

    # -- notifications -------------------------------------------------------------------------

    async def prepare(self, window: str, spec: WindowSpec) -> None:
        """Keep the window's notifier in step with its spec and Secret (read every few minutes)."""
        current = self._notifiers.get(window)
        if spec.notify is None:
            if current is not None:
                current.notifier.close(0)
                del self._notifiers[window]
            return
        reference = spec.notify.secret_ref
        events = tuple(str(event) for event in spec.notify.events)
        templates = MessageTemplates(spec.notify.title, spec.notify.body, self.cluster_name)
        if current is not None and current.notifier.templates != templates:
            current.notifier.templates = templates  # read by the worker per message
        if (
            current is not None
            and current.source[:3] == (reference.name, reference.key, events)
            and time.monotonic() - current.read_at < SECRET_REFRESH_SECONDS
        ):
            return
        try:
            secret = await self.kube.get(
                f"/api/v1/namespaces/{self.namespace}/secrets/{reference.name}"
            )
        except ApiException as error:
            log.warning(
                "window %s: cannot read notify Secret %s/%s: %s",
                window,
                self.namespace,
                reference.name,
                error.reason,
            )
            return
        version = str(secret["metadata"]["resourceVersion"])
        source = (reference.name, reference.key, events, version)
        if current is not None and current.source == source:
            current.read_at = time.monotonic()
            return
        data = {key: value for key, value in (secret.get("data") or {}).items()}
        targets, problems = targets_from_secret_data(data, key=reference.key)
        for problem in problems:
            log.warning("window %s: notify Secret %s: %s", window, reference.name, problem)
        if current is not None:
            current.notifier.close(0)
        self._notifiers[window] = _WindowNotifier(
            Notifier(
                targets,
                events,
                on_failure=self.metrics.count_notification_failure,
                name=f"notify-{window}",
                templates=templates,
            ),
            source,
            time.monotonic(),
        )

    def _notify(
        self,
        event: str,
        window: str,
        node: str | None = None,
        phase: str | None = None,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        holder = self._notifiers.get(window)
        if holder is not None:
            holder.notifier.send(event, window, node, phase, reason, message)

    def close(self) -> None:
        for holder in self._notifiers.values():
            holder.notifier.close()
        self._notifiers.clear()

    # -- flow and reconciler callbacks ---------------------------------------------------------

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
        if lease is not None and old in PHASE_LABELS:
            elapsed = (self.now() - lease.since).total_seconds()
            self.metrics.observe_phase(PHASE_LABELS[old], max(elapsed, 0.0))
        if old == Phase.PENDING and new == Phase.DRAINING:
            freed_at = self._freed_at.pop(window, None)
            if freed_at is not None:
                self.metrics.observe_handoff(window, max(time.monotonic() - freed_at, 0.0))
        elif new in (Phase.DONE, Phase.PENDING) and window in self._waiting:
            self._freed_at[window] = time.monotonic()
        if old == Phase.PENDING and new == Phase.DRAINING:
            self._notify("Started", window, node, str(new), reason, message)
        elif new == Phase.DONE:
            self.metrics.count_reboot(window, RebootResult.SUCCEEDED)
            self._notify("Succeeded", window, node, str(new), reason, message)
        elif new == Phase.FAILED:
            self.metrics.count_reboot(window, RebootResult.FAILED)
            self._notify("Failed", window, node, str(new), reason, message)
        elif reason == "DrainAborted":
            self.metrics.count_reboot(window, RebootResult.ABORTED)
            self._notify("Failed", window, node, str(old), reason, message)

    def window_event(self, window: str, reason: str, message: str) -> None:
        event = WINDOW_EVENT_NOTIFICATIONS.get(reason)
        if event is not None:
            self._notify(event, window, reason=reason, message=message)

    def blocker_result(self, window: str, result: BlockerResult) -> None:
        self.blocked[window] = result

    def plan(self, plan: Plan, lock: LockState, node_views: Iterable[NodeView]) -> None:
        """Per-node and per-window gauges from the plan a pass just made (replaced whole)."""
        pending = {item.name for window_plan in plan.windows for item in window_plan.pending}
        self._waiting = frozenset(w.name for w in plan.windows if w.pending)
        nodes: dict[str, NodeSample] = {}
        for view in node_views:
            lease = lock.nodes.get(view.name)
            phase = str(lease.phase) if lease else ("Pending" if view.name in pending else None)
            nodes[view.name] = NodeSample(reboot_required=view.reboot_required, phase=phase)
        windows = {}
        for window_plan in plan.windows:
            result = self.blocked.get(window_plan.name)
            reasons = (
                frozenset({result.reason})
                if result is not None and result.blocked
                else (frozenset())
            )
            windows[window_plan.name] = WindowSample(
                open=window_plan.is_open and not window_plan.suspended,
                nodes_in_maintenance=len(window_plan.in_maintenance),
                blocked_reasons=reasons,
            )
        self.metrics.set_nodes(nodes)
        self.metrics.set_windows(windows)
