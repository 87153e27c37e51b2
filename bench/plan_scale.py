"""How long the planner takes on a large synthetic cluster (pure: no API server).

A pass plans once (and again after its lock changed); every admission re-plans on the lock it
writes (without the preview's batches, and with the pass's governing assignment); `pitstop plan`
plans once with batches. This prints the time of each kind at the given size, in-process.

    uv run python bench/plan_scale.py --nodes 5000 --flagged 250 --max-unavailable 100
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from brain.core.lock_state import CompletedReboot, LockState, NodeLease, WindowRecord
from brain.core.node_view import NodeView
from brain.core.phase import Phase
from brain.core.planner import NamedWindow, governing_of, make_plan
from brain.core.window import parse_window_spec

NOW = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)
ZONE = "topology.kubernetes.io/zone"


def cluster(
    nodes: int, flagged: int, limit: int, zones: int
) -> tuple[list[NamedWindow], list[NodeView], LockState]:
    """One window over every node, `flagged` flagged, `limit` of them in maintenance."""
    spec = parse_window_spec(
        {"maxUnavailable": limit, "topology": {"key": ZONE, "maxUnavailable": "50%"}}, "all"
    )
    views = [
        NodeView(
            name=f"node-{index:05d}",
            labels={
                ZONE: f"zone-{index % zones}",
                "kubernetes.io/hostname": f"node-{index:05d}",
                "kubernetes.io/os": "linux",
                "type": "kwok",
            },
            reboot_required=index < flagged,
            reboot_required_since=NOW - timedelta(seconds=index) if index < flagged else None,
            boot_id=f"boot-{index}",
            created=NOW - timedelta(days=1),
        )
        for index in range(nodes)
    ]
    lock = LockState()
    for index in range(min(limit, flagged)):
        lock.nodes[f"node-{index:05d}"] = NodeLease(
            window="all", phase=Phase.DRAINING, since=NOW, domain=f"zone-{index % zones}"
        )
    record = WindowRecord()
    for index in range(limit, min(limit + 50, nodes)):
        record.record(
            CompletedReboot(
                node=f"node-{index:05d}",
                finished=NOW,
                result="Rebooted",
                message="",
                boot_id="new",
                boot_id_before=f"boot-{index}",
            )
        )
    lock.windows["all"] = record
    return [NamedWindow("all", spec)], views, lock


def timed(function: Callable[[], object], repeat: int) -> float:
    """The median of `repeat` runs, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--flagged", type=int, default=250)
    parser.add_argument("--max-unavailable", type=int, default=100)
    parser.add_argument("--zones", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    arguments = parser.parse_args()
    windows, views, lock = cluster(
        arguments.nodes, arguments.flagged, arguments.max_unavailable, arguments.zones
    )
    assignment = governing_of(windows, views)
    figures = {
        "nodes": arguments.nodes,
        "flagged": arguments.flagged,
        "limit": arguments.max_unavailable,
        "plan_full_s": timed(lambda: make_plan(windows, views, lock, NOW), arguments.repeat),
        "governing_s": timed(lambda: governing_of(windows, views), arguments.repeat),
        "admission_replan_s": timed(
            lambda: make_plan(windows, views, lock, NOW, assignment=assignment, batches=False),
            arguments.repeat,
        ),
    }
    print(
        json.dumps(
            {
                key: round(value, 4) if isinstance(value, float) else value
                for key, value in figures.items()
            }
        )
    )


if __name__ == "__main__":
    main()
