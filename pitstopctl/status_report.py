"""`pitstop status [WINDOW]`: one screen for the person on call.

Every window in one line (open, governed, flagged, in maintenance against its budget, failed,
what holds it), then the nodes in maintenance with phase and age, then the failed nodes with
the two commands that act on them. Read from the same snapshot and planner as `pitstop plan`,
which has the details (order, batches, reasons).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from brain.core.phase import Phase
from brain.core.planner import WindowPlan
from pitstopctl.connection import api_client, cluster_options, read_snapshot
from pitstopctl.plan_report import PlanPreview, preview


def age(delta: timedelta) -> str:
    """kubectl's short age: 45s, 12m, 3h, 2d."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 2 * 3600:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _short(text: str, limit: int = 60) -> str:
    """One screen wide: the start of a long message, marked as cut."""
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _state(window_plan: WindowPlan, now: datetime) -> str:
    if window_plan.suspended:
        return "suspended"
    if window_plan.failed:
        return "paused by a failed node"
    if window_plan.blocked_reason:
        return f"blocked: {window_plan.blocked_reason}"
    if not window_plan.is_open:
        if window_plan.next_open is None:
            return "closed, no opening within 400 days"
        return f"closed, opens in {age(window_plan.next_open - now)}"
    if window_plan.starts:
        return f"starting {len(window_plan.starts)} node(s)"
    if window_plan.in_maintenance:
        return "rolling"
    if window_plan.pending:
        return f"open, {len(window_plan.pending)} waiting"
    return "open, idle"


def render_status(preview: PlanPreview, window: str | None = None) -> str:
    now = preview.plan.now
    plans = [p for p in preview.plan.windows if window is None or p.name == window]
    lines = [f"pitstop status at {now.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}", ""]
    if window is not None and not plans:
        known = window in preview.invalid
        lines.append(
            f"Window {window} is invalid: {preview.invalid[window]}"
            if known
            else f"No NodesMaintenanceWindow named {window}."
        )
        return "\n".join(lines) + "\n"
    if not plans and not preview.invalid:
        lines.append("No NodesMaintenanceWindow exists: no node will be rebooted.")
    if plans:
        rows = [["WINDOW", "OPEN", "GOVERNED", "FLAGGED", "IN MAINTENANCE", "FAILED", "STATE"]]
        for p in plans:
            rows.append(
                [
                    p.name,
                    "yes" if p.is_open else "no",
                    str(len(p.governed)),
                    str(len(p.pending)),
                    f"{p.budget.in_maintenance}/{p.budget.limit}",
                    str(len(p.failed)),
                    _state(p, now),
                ]
            )
        lines.extend(_table(rows))
    if window is None and preview.invalid:
        lines.append("")
        lines.extend(
            f"Invalid window {name}: {why}" for name, why in sorted(preview.invalid.items())
        )
    leases = sorted(
        (name, lease)
        for name, lease in preview.lock.nodes.items()
        if window is None or lease.window == window
    )
    working = [(name, lease) for name, lease in leases if lease.phase != Phase.FAILED]
    failed = [(name, lease) for name, lease in leases if lease.phase == Phase.FAILED]
    lines.append("")
    if working:
        lines.append("In maintenance:")
        rows = [["NODE", "WINDOW", "PHASE", "AGE", "ATTEMPT", "MESSAGE"]]
        for name, lease in working:
            rows.append(
                [
                    name,
                    lease.window,
                    str(lease.phase),
                    age(now - lease.since),
                    str(lease.attempt),
                    _short(lease.message),
                ]
            )
        lines.extend("  " + line for line in _table(rows))
    else:
        lines.append("In maintenance: none")
    if failed:
        lines.append("")
        lines.append("Failed (each keeps its slot and pauses its window until you act):")
        for name, lease in failed:
            lines.append(f"  {name}  window {lease.window}, failed {age(now - lease.since)} ago")
            if lease.message:
                lines.append(f"    {lease.message}")
            lines.append(f"    fix the cause, then: pitstop retry {name}")
            lines.append(f"    or give up on it:    pitstop release {name}")
    return "\n".join(lines).rstrip() + "\n"


def run_status(arguments: argparse.Namespace) -> int:

    handle = api_client(arguments)
    try:
        snapshot = read_snapshot(handle, arguments.namespace, arguments.lock_name)
    finally:
        handle.close()
    sys.stdout.write(render_status(preview(snapshot, datetime.now(UTC)), arguments.window))
    return 0


def register_status(subcommands: Any) -> None:

    parser = subcommands.add_parser(
        "status",
        parents=[cluster_options()],
        help="one screen: windows, nodes in maintenance, failed nodes and what to do (read-only)",
        description="Every window in one line, the nodes in maintenance with phase and age, and"
        " the failed nodes with the command to act on each. `pitstop plan` has the details.",
    )
    parser.add_argument("window", nargs="?", help="show only this window and its nodes")
    parser.set_defaults(handler=run_status)
