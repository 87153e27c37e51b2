"""`pitstop plan`'s report: the planner's decisions for the cluster as it is, in words.

Pure (the CLI reads the cluster and hands the objects in), so it is tested without a cluster,
and it calls the same planner as the brain: what it prints is what the brain would decide now.
Window blockers (Prometheus, pods of scope Window, node annotations) are not evaluated here;
the report says which ones a window has. Pod blockers of scope Node are (the CLI lists the pods
and hands `node_blockers` in): a node held back by a pod on it names the pod.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from brain.core.lock_state import LockState
from brain.core.node_view import NodeView, node_view_from_object
from brain.core.planner import NamedWindow, Plan, WindowPlan, describe_error, make_plan
from brain.core.schedule import upcoming_openings
from brain.core.window import PodBlockerScope, WindowSpec, WindowSpecError, parse_window_object


@dataclass(frozen=True)
class ClusterSnapshot:
    """What `pitstop plan` read: window and node objects as dicts, and the lock content."""

    windows: Sequence[Mapping[str, Any]]
    nodes: Sequence[Mapping[str, Any]]
    lock: LockState = field(default_factory=LockState)


@dataclass(frozen=True)
class PlanPreview:
    plan: Plan
    specs: Mapping[str, WindowSpec]
    invalid: Mapping[str, str]  # window name -> why it does not parse
    nodes: Mapping[str, NodeView]
    lock: LockState


def preview(
    snapshot: ClusterSnapshot,
    now: datetime,
    blockers: Mapping[str, str | None] | None = None,
    node_blockers: Mapping[str, str] | None = None,
) -> PlanPreview:
    """Parse the snapshot and run the planner on it (invalid windows are left out, as the
    brain leaves them out)."""
    specs: dict[str, WindowSpec] = {}
    invalid: dict[str, str] = {}
    for window_object in snapshot.windows:
        try:
            name, _generation, spec = parse_window_object(window_object)
        except WindowSpecError as error:
            invalid[error.window] = "; ".join(error.problems)
            continue
        specs[name] = spec
    views = [node_view_from_object(node) for node in snapshot.nodes]
    windows = [NamedWindow(name, spec) for name, spec in specs.items()]
    plan = make_plan(windows, views, snapshot.lock, now, blockers, node_blockers)
    return PlanPreview(
        plan=plan,
        specs=specs,
        invalid=invalid,
        nodes={view.name: view for view in views},
        lock=snapshot.lock,
    )


def ungoverned_flagged(preview: PlanPreview) -> list[str]:
    """Flagged nodes no window governs, sorted: one definition for the text and data reports
    (a node in conflict or already in the lock is reported elsewhere, so it is not listed)."""
    conflicted = {conflict.node for conflict in preview.plan.conflicts}
    return sorted(
        name
        for name, view in preview.nodes.items()
        if view.reboot_required
        and name not in preview.plan.governing
        and name not in conflicted
        and name not in preview.lock.nodes
    )


def _when(moment: datetime | None, zone: ZoneInfo) -> str:
    if moment is None:
        return "not within the next 400 days"
    try:
        local = moment.astimezone(zone)
    except OverflowError:  # a saturated moment (see brain.core.clock): shown in UTC only
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    utc = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if zone.key == "UTC":
        return utc
    return f"{local.strftime('%Y-%m-%d %H:%M %Z')} ({utc})"


def _schedule_line(window_plan: WindowPlan, zone: ZoneInfo) -> str:
    if window_plan.is_open:
        closes = (
            _when(window_plan.open_until, zone)
            if window_plan.open_until is not None
            else "not within the next 400 days (always open)"
        )
        line = f"OPEN until {closes}"
        if window_plan.open_until is not None and window_plan.next_open is not None:
            line += f"; next opens {_when(window_plan.next_open, zone)}"
        return line
    line = f"closed; opens {_when(window_plan.next_open, zone)}"
    if window_plan.next_open is not None:
        line += f", closes {_when(window_plan.next_close, zone)}"
    return line


def _blocker_names(spec: WindowSpec) -> list[str]:
    names = []
    if spec.blockers.prometheus is not None:
        names.append(f"prometheus {spec.blockers.prometheus.url}")
    window_pods = [entry for entry in spec.blockers.pods if entry.scope is PodBlockerScope.WINDOW]
    if window_pods:
        names.append(f"{len(window_pods)} pod selector(s)")
    if spec.blockers.node_annotations:
        names.append("node annotations " + ", ".join(spec.blockers.node_annotations))
    return names


def _short_list(names: Sequence[str], limit: int = 20) -> str:
    if not names:
        return "-"
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def _render_window(window_plan: WindowPlan, spec: WindowSpec, preview: PlanPreview) -> list[str]:
    zone = spec.schedule.zone
    budget = window_plan.budget
    lines = [
        f"Window {window_plan.name}  (priority {spec.priority}, maxUnavailable"
        f" {spec.max_unavailable}, time zone {spec.schedule.time_zone})",
        f"  schedule:  {_schedule_line(window_plan, zone)}",
    ]
    if any(recurring.monthly for recurring in spec.schedule.windows):
        # Monthly rules (the 2nd Tuesday...) are hard to count in one's head: list a few.
        openings = upcoming_openings(spec.schedule, preview.plan.now, count=3)
        lines.append(
            "  next openings: "
            + ("; ".join(_when(start, zone) for start, _end in openings) or "none within 400 days")
        )
    state = []
    if window_plan.suspended:
        state.append("SUSPENDED")
    if window_plan.failed:
        state.append("PAUSED by failed node(s) " + ", ".join(window_plan.failed))
    if window_plan.blocked_reason:
        state.append(f"BLOCKED: {window_plan.blocked_reason}")
    if window_plan.delay_until is not None:
        state.append(f"delayBetweenNodes until {_when(window_plan.delay_until, zone)}")
    if state:
        lines.append(f"  state:     {'; '.join(state)}")
    lines.append(
        f"  budget:    {budget.used} of {budget.limit} unavailable ({budget.in_maintenance} in"
        f" maintenance, {budget.unhealthy} unhealthy counted), {budget.available} free"
    )
    if window_plan.topology_key is not None:
        domains = ", ".join(
            f"{d.domain or '<none>'} {d.budget.used}/{d.budget.limit}" for d in window_plan.domains
        )
        lines.append(f"  per {window_plan.topology_key}: {domains or '-'}")
    lines.append(
        f"  governed:  {len(window_plan.governed)} node(s): {_short_list(window_plan.governed)}"
    )
    if window_plan.in_maintenance:
        lines.append("  in maintenance:")
        for name in window_plan.in_maintenance:
            lease = preview.lock.nodes[name]
            since = _when(lease.since, zone)
            extra = f": {lease.message}" if lease.message else ""
            lines.append(f"    {name}  {lease.phase} since {since}{extra}")
    starting = {start.node for start in window_plan.starts}
    held = {held.node: held for held in window_plan.held_back}
    if window_plan.pending:
        lines.append("  flagged, in the order they would go:")
        for pending in window_plan.pending:
            tags = []
            if pending.emergency:
                tags.append("emergency")
            if pending.priority:
                tags.append(f"priority {pending.priority}")
            if pending.domain:
                tags.append(f"{window_plan.topology_key}={pending.domain}")
            if pending.unhealthy:
                tags.append("already unavailable")
            if pending.since is not None:
                tags.append(f"flagged {_when(pending.since, zone)}")
            if pending.since_ignored:
                tags.append(pending.since_ignored)
            if pending.name in starting:
                verdict = "STARTS NOW"
            elif pending.name in held:
                verdict = f"waits: {held[pending.name].reason}: {held[pending.name].message}"
            else:
                verdict = "waits"
            lines.append(
                f"    batch {pending.batch}  {pending.name}  [{', '.join(tags)}]  {verdict}"
            )
    else:
        lines.append("  flagged:   none waiting")
    others = [
        h for h in window_plan.held_back if h.node not in {p.name for p in window_plan.pending}
    ]
    if others:
        lines.append("  held back:")
        lines.extend(f"    {h.node}  {h.reason}: {h.message}" for h in others)
    blockers = _blocker_names(spec)
    if blockers:
        lines.append(f"  blockers:  {'; '.join(blockers)} (not evaluated by pitstop plan)")
    return lines


def render(preview: PlanPreview) -> str:
    """The report, one block per window, then invalid windows and ungoverned flagged nodes."""
    now = preview.plan.now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [f"pitstop plan at {now} (read-only: nothing is changed)", ""]
    if not preview.plan.windows and not preview.invalid:
        lines.append("No NodesMaintenanceWindow exists: no node will be rebooted.")
    for window_plan in preview.plan.windows:
        try:
            lines.extend(_render_window(window_plan, preview.specs[window_plan.name], preview))
        except Exception as error:  # one window's odd values never hide the others
            lines.append(f"Window {window_plan.name}: cannot be shown: {describe_error(error)}")
        lines.append("")
    if preview.plan.errors:
        lines.append("Windows the planner failed on (Degraded; none of their nodes starts):")
        lines.extend(f"  {name}: {why}" for name, why in sorted(preview.plan.errors.items()))
        lines.append("")
    if preview.invalid:
        lines.append("Invalid windows (the brain does not act on them):")
        lines.extend(f"  {name}: {why}" for name, why in sorted(preview.invalid.items()))
        lines.append("")
    ungoverned = ungoverned_flagged(preview)
    if ungoverned:
        lines.append(f"Flagged but governed by no window: {_short_list(ungoverned)}")
    return "\n".join(lines).rstrip() + "\n"
