"""Which nodes need a pending-taint write, and the JSON patches that make it (pure parts; the
writes themselves are tested on the real API server:
tests/integration/test_pending_taints_on_cluster.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from brain.core.lock_state import LockState, NodeLease
from brain.core.node_view import NodeView, Taint
from brain.core.phase import Phase
from brain.core.planner import NamedWindow, make_plan
from brain.core.window import parse_window_spec
from brain.node_updates import PENDING_TAINT, taint_operations
from brain.pending_taints import TaintChange, taint_changes

NOW = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)
NOT_READY = Taint("node.kubernetes.io/not-ready", "", "NoSchedule")


def flagged(name: str, minutes_ago: int, *taints: Taint) -> NodeView:
    return NodeView(
        name,
        reboot_required=True,
        reboot_required_since=NOW - timedelta(minutes=minutes_ago),
        taints=taints,
    )


def changes_for(
    spec: dict[str, object], nodes: list[NodeView], lock: LockState
) -> list[TaintChange]:
    window = NamedWindow("w", parse_window_spec(spec, "w"))
    plan = make_plan([window], nodes, lock, NOW)
    return taint_changes(plan, plan.window("w"), nodes, lock, window.spec)


def test_only_nodes_whose_taints_differ_are_written() -> None:
    """Issue 18: with 5,000 flagged nodes every pass went through them all; a node already
    right costs nothing now."""
    next_up = flagged("a", 30)  # waits: "d" holds the window's one slot
    already = flagged("b", 20, PENDING_TAINT)
    waiting = flagged("c", 10, NOT_READY)
    in_lock = flagged("d", 40)
    done = NodeView("e", taints=(PENDING_TAINT, NOT_READY))  # no longer flagged
    clean = NodeView("f", taints=(NOT_READY,))
    lock = LockState(nodes={"d": NodeLease(window="w", phase=Phase.DRAINING, since=NOW)})
    changes = changes_for({}, [next_up, already, waiting, in_lock, done, clean], lock)
    assert changes == [
        TaintChange(next_up, add=PENDING_TAINT),
        TaintChange(waiting, add=PENDING_TAINT),
        TaintChange(done, remove=(PENDING_TAINT.key,)),
    ]


def test_a_node_admitted_by_this_pass_gets_no_taint() -> None:
    first, second = flagged("a", 30), flagged("b", 20)
    window = NamedWindow("w", parse_window_spec({}, "w"))
    plan = make_plan([window], [first, second], LockState(), NOW)
    assert [start.node for start in plan.window("w").starts] == ["a"]
    # The lock as the admission left it: "a" holds a slot (and would not start again).
    admitted = LockState(nodes={"a": NodeLease(window="w", phase=Phase.DRAINING, since=NOW)})
    changes = taint_changes(plan, plan.window("w"), [first, second], admitted, window.spec)
    assert changes == [TaintChange(second, add=PENDING_TAINT)]


def test_a_waiting_node_keeps_only_the_taint_its_window_asks_for() -> None:
    chosen = Taint("example.com/soon", "true", "PreferNoSchedule")
    spec = {"maxUnavailable": 1, "reboot": {"pendingTaint": {"key": chosen.key}}}
    holder = flagged("a", 60)
    lock = LockState(nodes={"a": NodeLease(window="w", phase=Phase.DRAINING, since=NOW)})
    stale = flagged("b", 30, PENDING_TAINT)
    changes = changes_for(spec, [holder, stale], lock)
    assert changes == [TaintChange(stale, add=chosen, remove=(PENDING_TAINT.key,))]
    off = {"maxUnavailable": 1, "reboot": {"pendingTaint": {"enabled": False}}}
    assert changes_for(off, [holder, stale], lock) == [
        TaintChange(stale, remove=(PENDING_TAINT.key,))
    ]


def test_patches_touch_only_our_own_taints() -> None:
    """A test of the whole list failed (422) whenever the control plane had changed its own
    taints since the view was taken: 4,127 of 9,027 PATCHes at 5,000 new nodes."""
    node = NodeView("n", taints=(NOT_READY,))
    assert taint_operations(node, add=PENDING_TAINT) == [
        {"op": "add", "path": "/spec/taints/-", "value": PENDING_TAINT.as_dict()}
    ]
    # No list yet: made only if there still is none.
    assert taint_operations(NodeView("n"), add=PENDING_TAINT) == [
        {"op": "test", "path": "/spec/taints", "value": None},
        {"op": "add", "path": "/spec/taints", "value": [PENDING_TAINT.as_dict()]},
    ]
    # Removed at their index (highest first, so the lower ones stay put), each tested.
    other = Taint("x", "", "NoSchedule")
    tainted = NodeView("n", taints=(PENDING_TAINT, NOT_READY, Taint("x", "1", "NoExecute"), other))
    assert taint_operations(tainted, remove=(PENDING_TAINT.key, "x")) == [
        {"op": "test", "path": "/spec/taints/3/key", "value": "x"},
        {"op": "remove", "path": "/spec/taints/3"},
        {"op": "test", "path": "/spec/taints/2/key", "value": "x"},
        {"op": "remove", "path": "/spec/taints/2"},
        {"op": "test", "path": "/spec/taints/0/key", "value": PENDING_TAINT.key},
        {"op": "remove", "path": "/spec/taints/0"},
    ]
