"""A reboot-required-since before the node's creation or in the future is not believed: it
neither moves the node to the front of its queue nor makes a rebooted node look flagged anew,
and `pitstop plan` says it was ignored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from brain.core.lock_state import CompletedReboot, LockState, WindowRecord
from brain.core.node_view import FLAG_TIME_SKEW, NodeView, believable_since, node_view_from_object
from brain.core.planner import HoldReason, NamedWindow, make_plan
from brain.core.window import parse_window_spec
from pitstop import contract
from pitstopctl.plan_report import ClusterSnapshot, preview, render

NOW = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)  # a Wednesday
CREATED = NOW - timedelta(days=30)


def node(name: str, since: datetime | None, boot_id: str = "") -> NodeView:
    return NodeView(
        name=name,
        reboot_required=True,
        reboot_required_since=since,
        created=CREATED,
        boot_id=boot_id,
    )


def queue(nodes: list[NodeView], lock: LockState | None = None) -> list[str]:
    everyone = NamedWindow("everyone", parse_window_spec({"maxUnavailable": 1}, "everyone"))
    plan = make_plan([everyone], nodes, lock or LockState(), NOW).window("everyone")
    return [pending.name for pending in plan.pending]


def test_a_flag_time_within_the_nodes_life_is_kept() -> None:
    for since in (CREATED, CREATED - FLAG_TIME_SKEW, NOW, NOW + FLAG_TIME_SKEW):
        kept = believable_since(node("n", since), NOW)
        assert kept.reboot_required_since == since and kept.since_ignored == ""
    # Without a known creation time, only the future is checked.
    old = NodeView(name="n", reboot_required=True, reboot_required_since=datetime(1970, 1, 1))
    assert believable_since(old, NOW) == old


def test_a_flag_time_outside_the_nodes_life_is_set_aside_with_why() -> None:
    early = believable_since(node("n", CREATED - FLAG_TIME_SKEW - timedelta(seconds=1)), NOW)
    assert early.reboot_required_since is None
    assert "before the node was created" in early.since_ignored
    late = believable_since(node("n", NOW + FLAG_TIME_SKEW + timedelta(seconds=1)), NOW)
    assert late.reboot_required_since is None
    assert "in the future" in late.since_ignored


def test_an_unbelievable_flag_time_does_not_jump_the_queue() -> None:
    honest = [
        node("honest-1", NOW - timedelta(hours=2)),
        node("honest-2", NOW - timedelta(hours=1)),
    ]
    epoch = node("a-epoch", datetime(1970, 1, 1, tzinfo=UTC))
    future = node("a-future", NOW + timedelta(days=365))
    order = queue([*honest, epoch, future])
    # Both go after every node with a believable flag time (as nodes without one do).
    assert order == ["honest-1", "honest-2", "a-epoch", "a-future"]


def test_a_future_flag_time_does_not_make_a_rebooted_node_go_again() -> None:
    # Rebooted to boot-2 five minutes ago; a flag time "after" that reboot, but in the future,
    # is not a new flag: the node rests at this boot.
    record = CompletedReboot(
        node="n1", finished=NOW - timedelta(minutes=5), result="Rebooted", bootID="boot-2"
    )
    lock = LockState(windows={"everyone": WindowRecord(completed=[record])})
    everyone = NamedWindow("everyone", parse_window_spec({}, "everyone"))
    stale = node("n1", NOW + timedelta(days=1), boot_id="boot-2")
    plan = make_plan([everyone], [stale], lock, NOW).window("everyone")
    assert plan.pending == ()
    assert {held.node: held.reason for held in plan.held_back} == {"n1": HoldReason.RESTING}
    # A believable flag raised after the reboot still counts.
    anew = node("n1", NOW - timedelta(minutes=1), boot_id="boot-2")
    assert queue([anew], lock) == ["n1"]


def node_object(name: str, since: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": "2025-05-05T12:00:00Z",
            "labels": {contract.REBOOT_REQUIRED_LABEL: contract.REBOOT_REQUIRED_VALUE},
            "annotations": {contract.REBOOT_REQUIRED_SINCE_ANNOTATION: since},
        },
        "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def test_the_node_view_reads_the_creation_time() -> None:
    view = node_view_from_object(node_object("n", "2025-06-01T00:00:00Z"))
    assert view.created == datetime(2025, 5, 5, 12, tzinfo=UTC)


def test_pitstop_plan_says_which_flag_time_it_ignored() -> None:
    snapshot = ClusterSnapshot(
        windows=[
            {
                "apiVersion": "pitstop.dev/v1alpha1",
                "kind": "NodesMaintenanceWindow",
                "metadata": {"name": "everyone", "generation": 1},
                "spec": {},
            }
        ],
        nodes=[
            node_object("n-epoch", "1970-01-01T00:00:00Z"),
            node_object("n-honest", "2025-06-04T09:00:00Z"),
        ],
    )
    text = render(preview(snapshot, NOW))
    queued = [line for line in text.splitlines() if line.strip().startswith("batch")]
    epoch_line = next(line for line in queued if "n-epoch" in line)
    assert "reboot-required-since 1970-01-01T00:00:00Z ignored: before the node was created" in (
        epoch_line
    )
    honest_line = next(line for line in queued if "n-honest" in line)
    assert "ignored" not in honest_line
    assert queued.index(honest_line) < queued.index(epoch_line)
