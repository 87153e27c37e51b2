"""`pitstop plan -o json|yaml`: the same report as the text, as one plain document.

Built from the same PlanPreview as the text (pitstopctl/plan_report.py), so both say the same thing;
the schema is documented in docs/operations.md and versioned by `apiVersion`: fields may be
added, none renamed or removed without a new version. Times are RFC 3339 in UTC.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import yaml

from brain.core.planner import WindowPlan
from pitstopctl.plan_report import PlanPreview, ungoverned_flagged

DOCUMENT_VERSION = "pitstop.dev/plan/v1"
OUTPUT_FORMATS = ("text", "json", "yaml")


def _time(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _budget(used: int, limit: int, in_maintenance: int, unhealthy: int) -> dict[str, int]:
    return {
        "used": used,
        "limit": limit,
        "inMaintenance": in_maintenance,
        "unhealthy": unhealthy,
        "free": max(0, limit - used),
    }


def _window(window_plan: WindowPlan, preview: PlanPreview) -> dict[str, Any]:
    spec = preview.specs[window_plan.name]
    budget = window_plan.budget
    starting = {start.node for start in window_plan.starts}
    held = {held.node: held for held in window_plan.held_back}
    pending_names = {pending.name for pending in window_plan.pending}
    flagged = []
    for pending in window_plan.pending:
        entry: dict[str, Any] = {
            "node": pending.name,
            "batch": pending.batch,
            "priority": pending.priority,
            "emergency": pending.emergency,
            "domain": pending.domain or None,
            "alreadyUnavailable": pending.unhealthy,
            "flaggedSince": _time(pending.since),
            "startsNow": pending.name in starting,
        }
        if pending.name in held:
            entry["heldBack"] = {
                "reason": str(held[pending.name].reason),
                "message": held[pending.name].message,
            }
        flagged.append(entry)
    in_maintenance = []
    for name in window_plan.in_maintenance:
        lease = preview.lock.nodes[name]
        in_maintenance.append(
            {
                "node": name,
                "phase": str(lease.phase),
                "since": _time(lease.since),
                "attempt": lease.attempt,
                "emergency": lease.emergency,
                "message": lease.message,
            }
        )
    return {
        "name": window_plan.name,
        "priority": spec.priority,
        "maxUnavailable": spec.max_unavailable,
        "timeZone": spec.schedule.time_zone,
        "open": window_plan.is_open,
        "openUntil": _time(window_plan.open_until),
        "nextOpen": _time(window_plan.next_open),
        "nextClose": _time(window_plan.next_close),
        "suspended": window_plan.suspended,
        "blockedReason": window_plan.blocked_reason,
        "delayUntil": _time(window_plan.delay_until),
        "failed": list(window_plan.failed),
        "budget": _budget(budget.used, budget.limit, budget.in_maintenance, budget.unhealthy),
        "topology": None
        if window_plan.topology_key is None
        else {
            "key": window_plan.topology_key,
            "domains": [
                {
                    "domain": domain.domain,
                    **_budget(
                        domain.budget.used,
                        domain.budget.limit,
                        domain.budget.in_maintenance,
                        domain.budget.unhealthy,
                    ),
                }
                for domain in window_plan.domains
            ],
        },
        "governed": list(window_plan.governed),
        "inMaintenance": in_maintenance,
        "flagged": flagged,
        "heldBack": [
            {"node": h.node, "reason": str(h.reason), "message": h.message}
            for h in window_plan.held_back
            if h.node not in pending_names
        ],
    }


def plan_document(preview: PlanPreview) -> dict[str, Any]:
    """The report as plain data (what -o json and -o yaml print)."""
    ungoverned = ungoverned_flagged(preview)
    return {
        "apiVersion": DOCUMENT_VERSION,
        "kind": "Plan",
        "time": _time(preview.plan.now),
        "windows": [_window(window_plan, preview) for window_plan in preview.plan.windows],
        "invalidWindows": [
            {"name": name, "problems": why} for name, why in sorted(preview.invalid.items())
        ],
        # Windows the planner failed on (their nodes start nothing; the brain shows Degraded).
        "failedWindows": [
            {"name": name, "error": why} for name, why in sorted(preview.plan.errors.items())
        ],
        "conflicts": [
            {
                "node": conflict.node,
                "windows": list(conflict.windows),
                "priority": conflict.priority,
            }
            for conflict in preview.plan.conflicts
        ],
        "flaggedUngoverned": ungoverned,
    }


def render_document(document: dict[str, Any], output: str) -> str:
    if output == "json":
        return json.dumps(document, indent=2) + "\n"
    return str(yaml.safe_dump(document, sort_keys=False, default_flow_style=False))
