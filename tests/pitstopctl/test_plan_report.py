"""`pitstop plan`'s report from a snapshot of objects, without a cluster."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from brain.core.lock_state import LockState, NodeLease
from brain.core.phase import Phase
from pitstop import contract
from pitstopctl.plan_report import ClusterSnapshot, preview, render

NOW = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)  # Wednesday


def window(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "pitstop.dev/v1alpha1",
        "kind": "NodesMaintenanceWindow",
        "metadata": {"name": name, "generation": 1},
        "spec": spec,
    }


def node(
    name: str,
    pool: str = "general",
    zone: str = "a",
    flagged_at: str | None = None,
    ready: bool = True,
    **annotations: str,
) -> dict[str, Any]:
    labels = {"pool": pool, "topology.kubernetes.io/zone": zone}
    all_annotations = dict(annotations)
    if flagged_at is not None:
        labels[contract.REBOOT_REQUIRED_LABEL] = contract.REBOOT_REQUIRED_VALUE
        all_annotations[contract.REBOOT_REQUIRED_SINCE_ANNOTATION] = flagged_at
    return {
        "metadata": {"name": name, "labels": labels, "annotations": all_annotations},
        "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def snapshot() -> ClusterSnapshot:
    return ClusterSnapshot(
        windows=[
            window(
                "general",
                {
                    "nodeSelector": {"matchLabels": {"pool": "general"}},
                    "maxUnavailable": 2,
                    "topology": {"key": "topology.kubernetes.io/zone", "maxUnavailable": 1},
                    "blockers": {"nodeAnnotations": ["example.com/hold"]},
                },
            ),
            window(
                "gpu-nights",
                {
                    "nodeSelector": {"matchLabels": {"pool": "gpu"}},
                    "schedule": {
                        "timeZone": "Europe/Berlin",
                        "windows": [{"days": ["Sat"], "start": "22:00", "end": "04:00"}],
                    },
                },
            ),
            window("gpu-rival", {"nodeSelector": {"matchLabels": {"pool": "gpu"}}}),
            window(
                "gpu-special", {"priority": 5, "nodeSelector": {"matchLabels": {"pool": "gpu"}}}
            ),
            window("broken", {"maxUnavailable": "150%"}),
        ],
        nodes=[
            node("g-a1", flagged_at="2025-06-04T09:00:00Z"),
            node("g-a2", flagged_at="2025-06-04T08:00:00Z"),
            node("g-b1", zone="b", flagged_at="2025-06-04T10:00:00Z"),
            node("g-b2", zone="b", flagged_at="2025-06-04T07:00:00Z", ready=False),
            node("g-c1", zone="c", flagged_at="2025-06-04T11:00:00Z"),
            node("g-idle", zone="c"),
            node("gpu-1", pool="gpu", flagged_at="2025-06-04T09:00:00Z"),
            node("lonely", pool="storage", flagged_at="2025-06-04T09:00:00Z"),
        ],
        lock=LockState(
            nodes={"g-c1-old": NodeLease(window="general", phase=Phase.REBOOTING, since=NOW)}
        ),
    )


def test_report_reflects_the_planner() -> None:
    result = preview(snapshot(), NOW)
    general = result.plan.window("general")
    assert [s.node for s in general.starts] == ["g-b2"]
    text = render(result)
    assert "pitstop plan at 2025-06-04T12:00:00Z" in text
    # The general window: the unhealthy node g-b2 goes first (oldest, already unavailable),
    # the window budget (2) is full with the rebooting lease and g-b2.
    block = text.split("Window general ")[1].split("\nWindow ")[0]
    assert "OPEN until not within the next 400 days" in block
    assert "budget:    2 of 2 unavailable (1 in maintenance, 1 unhealthy counted), 0 free" in block
    lines = [line.strip() for line in block.splitlines()]
    flagged = [line for line in lines if line.startswith("batch ")]
    assert [line.split()[2] for line in flagged] == ["g-b2", "g-a2", "g-a1", "g-b1", "g-c1"]
    assert flagged[0].startswith("batch 1  g-b2") and flagged[0].endswith("STARTS NOW")
    assert "already unavailable" in flagged[0]
    assert "waits: NoBudget" in flagged[1]
    assert "g-c1-old  Rebooting since" in block
    assert "node annotations example.com/hold (not evaluated by pitstop plan)" in block
    assert "governed:  6 node(s): g-a1, g-a2, g-b1, g-b2, g-c1, g-idle" in block


def test_report_shows_conflicts_priorities_closed_windows_and_invalid_ones() -> None:
    text = render(preview(snapshot(), NOW))
    # gpu-special (priority 5) takes gpu-1 over from the two priority-0 gpu windows.
    special = text.split("Window gpu-special ")[1].split("\nWindow ")[0]
    assert "STARTS NOW" in special and "gpu-1" in special
    nights = text.split("Window gpu-nights ")[1].split("\nWindow ")[0]
    assert "closed; opens 2025-06-07 22:00 CEST (2025-06-07T20:00:00Z)" in nights
    assert "closes 2025-06-08 04:00 CEST (2025-06-08T02:00:00Z)" in nights
    assert "governed:  0 node(s)" in nights
    assert "Invalid windows (the brain does not act on them):" in text
    assert "broken: spec.maxUnavailable: must be a whole number" in text
    assert "Flagged but governed by no window: lonely" in text


def test_report_names_conflicting_windows() -> None:
    data = snapshot()
    without_special = ClusterSnapshot(
        windows=[w for w in data.windows if w["metadata"]["name"] != "gpu-special"],
        nodes=data.nodes,
        lock=data.lock,
    )
    text = render(preview(without_special, NOW))
    rival = text.split("Window gpu-rival ")[1].split("\nWindow ")[0]
    assert "gpu-1  Conflict: also selected by gpu-nights with the same priority 0" in rival
    # A node in conflict is reported by its windows, not as ungoverned.
    assert text.endswith("Flagged but governed by no window: lonely\n")


def test_empty_cluster() -> None:
    text = render(preview(ClusterSnapshot(windows=[], nodes=[]), NOW))
    assert "No NodesMaintenanceWindow exists" in text
