"""The planner's shortcuts at scale decide exactly as the full plan does.

A pass works out who governs whom once and hands it to every re-plan (its admissions, made on
the lock each write lands on), and an admission leaves the preview's batch numbers out; the
batch numbering stops scanning a batch once the window is full. None of it may change a
decision.
"""

from __future__ import annotations

from datetime import datetime

from hypothesis import given, settings

from brain.core.lock_state import LockState
from brain.core.node_view import NodeView
from brain.core.planner import NamedWindow, Plan, governing_of, make_plan
from tests.brain.core.test_planner import NOW, ZONE, clusters, node, window

Cluster = tuple[list[NamedWindow], list[NodeView], LockState, datetime, dict[str, str | None]]


def _decisions(plan: Plan) -> object:
    return (
        dict(plan.governing),
        plan.conflicts,
        dict(plan.errors),
        [
            (
                window_plan.name,
                window_plan.starts,
                window_plan.held_back,
                [(item.name, item.domain, item.unhealthy) for item in window_plan.pending],
                window_plan.budget,
                window_plan.domains,
            )
            for window_plan in plan.windows
        ],
    )


@settings(max_examples=150, deadline=None)
@given(cluster=clusters())
def test_a_reused_assignment_without_batches_decides_the_same(cluster: Cluster) -> None:
    windows, nodes, lock, now, blockers = cluster
    full = make_plan(windows, nodes, lock, now, blockers)
    reused = make_plan(
        windows,
        list(reversed(nodes)),
        lock,
        now,
        blockers,
        assignment=governing_of(windows, nodes),
        batches=False,
    )
    assert _decisions(reused) == _decisions(full)
    assert all(item.batch == 0 for window_plan in reused.windows for item in window_plan.pending)


def test_batches_of_a_long_queue() -> None:
    """3,000 flagged nodes in three zones, 10 at a time and at most 4 per zone: the numbering
    stops scanning a full batch, and still gives every node the batch it would get one by one."""
    nodes = [
        node(f"node-{index:04d}", zone="abc"[index % 3], since_minutes_ago=10_000 - index)
        for index in range(3000)
    ]
    spec = window("all", maxUnavailable=10, topology={"key": ZONE, "maxUnavailable": 4})
    plan = make_plan([spec], nodes, LockState(), NOW).window("all")
    batches = {item.name: item.batch for item in plan.pending}
    # In flag order (oldest first), a zone at a time: a, b, c, a, b, c ... so each batch takes
    # the next 10, with at most 4 of one zone (a, b, c, a, b, c, a, b, c, a: a has 4).
    order = [item.name for item in plan.pending]
    assert order == [f"node-{index:04d}" for index in range(3000)]
    assert [batches[name] for name in order] == [index // 10 + 1 for index in range(3000)]
    assert len(plan.starts) == 10
