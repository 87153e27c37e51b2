"""pitstop_handoff_seconds: from a node freeing its slot to the next waiting node starting."""

from __future__ import annotations

from datetime import UTC, datetime

from brain.core.phase import Phase
from brain.integrations.metrics import BrainMetrics
from brain.integrations.observer import BrainObserver
from pitstopctl.plan_report import ClusterSnapshot, preview
from tests.pitstopctl.test_plan_report import node, window

NOW = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)


def handoffs(metrics: BrainMetrics, window_name: str) -> float:
    value = metrics.registry.get_sample_value(
        "pitstop_handoff_seconds_count", {"window": window_name}
    )
    return value or 0.0


def test_a_start_after_a_release_with_nodes_waiting_is_a_handoff() -> None:
    metrics = BrainMetrics()
    observer = BrainObserver(kube=None, namespace="pitstop-system", metrics=metrics)  # type: ignore[arg-type]
    waiting = preview(
        ClusterSnapshot(
            windows=[window("w", {})],
            nodes=[node("a", flagged_at="2025-06-04T09:00:00Z"), node("b")],
        ),
        NOW,
    )
    idle = preview(ClusterSnapshot(windows=[window("w", {})], nodes=[node("b")]), NOW)

    # Nobody waits when b finishes: a later start is not a hand-off.
    observer.plan(idle.plan, idle.lock, idle.nodes.values())
    observer.transition("w", "b", Phase.HEALTH_CHECK, Phase.DONE, "Rebooted", "", None)
    observer.transition("w", "a", Phase.PENDING, Phase.DRAINING, "Started", "", None)
    assert handoffs(metrics, "w") == 0

    # a waits while b finishes: a's start observes the gap, once.
    observer.plan(waiting.plan, waiting.lock, waiting.nodes.values())
    observer.transition("w", "b", Phase.HEALTH_CHECK, Phase.DONE, "Rebooted", "", None)
    observer.transition("w", "a", Phase.PENDING, Phase.DRAINING, "Started", "", None)
    observer.transition("w", "c", Phase.PENDING, Phase.DRAINING, "Started", "", None)
    assert handoffs(metrics, "w") == 1
    assert (metrics.registry.get_sample_value("pitstop_handoff_seconds_sum", {"window": "w"})
            or 0) < 1  # fmt: skip
