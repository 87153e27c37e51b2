"""Rebuilding a deleted lock from the nodes' marks and the reboot Jobs (pure decisions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from brain.core.node_view import NodeView
from brain.core.phase import Phase
from brain.lock_rebuild import MarkedNode, RebootJobMark, rebuild_state

NOW = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(minutes=10)
SELECT_ALL = {"nodeSelector": {"matchLabels": {"pool": "p"}}, "maxUnavailable": 2}


def view(name: str, boot: str, flagged: bool = True, since: datetime | None = None) -> NodeView:
    return NodeView(
        name,
        {"pool": "p"},
        reboot_required=flagged,
        reboot_required_since=(since or NOW - timedelta(hours=1)) if flagged else None,
        unschedulable=True,
        boot_id=boot,
    )


def job(node: str, boot: str, created: datetime = EARLIER) -> RebootJobMark:
    return RebootJobMark(f"reboot-{node}-{boot}", node, boot, "w", created)


def test_each_marked_node_resumes_where_the_cluster_shows_it() -> None:
    nodes = [
        view("away", "b1"),  # its Job for its current boot exists: the reboot is under way
        view("back", "b2", flagged=False),  # rebooted by its Job (b1 -> b2), flag cleared
        view("drain", "b1"),  # marked, flagged, no Job: draining again
        view("idle", "b1", flagged=False),  # marked, not flagged, no Job: released
        view("other", "b1"),  # not marked: not in the lock
    ]
    marked = [MarkedNode(node, "w") for node in nodes[:4]]
    jobs = [job("away", "b1"), job("back", "b1")]
    rebuilt = rebuild_state(marked, nodes, jobs, {"w": SELECT_ALL}, NOW)
    phases = {name: lease.phase for name, lease in rebuilt.state.nodes.items()}
    # maxUnavailable 2: away and back hold the two slots, so drain is released, not drained.
    assert phases == {"away": Phase.WAITING_FOR_NODE, "back": Phase.HEALTH_CHECK}
    assert rebuilt.state.nodes["away"].job_name == "reboot-away-b1"
    assert rebuilt.state.nodes["away"].deadline is not None
    assert rebuilt.state.nodes["back"].boot_id_before == "b1"
    assert sorted(rebuilt.release) == ["drain", "idle"]
    assert rebuilt.state.windows["w"].spec == SELECT_ALL
    assert "not known" in rebuilt.state.nodes["back"].message  # the cordon before: unknown
    lines = " ".join(rebuilt.lines["w"])
    assert "drain released: its window's budget is used" in lines


def test_a_flagged_marked_node_without_a_job_drains_again_within_the_budget() -> None:
    nodes = [view("drain", "b1"), view("again", "b1")]
    spec = {**SELECT_ALL, "maxUnavailable": 1}
    rebuilt = rebuild_state([MarkedNode(n, "w") for n in nodes], nodes, [], {"w": spec}, NOW)
    assert {name: lease.phase for name, lease in rebuilt.state.nodes.items()} == {
        "again": Phase.DRAINING
    }
    assert rebuilt.release == ["drain"]


def test_a_job_of_an_earlier_rollout_is_not_taken_for_this_attempts_reboot() -> None:
    # Flagged again after that Job was made: the Job rebooted it in an earlier rollout.
    node = view("n", "b2", since=EARLIER + timedelta(minutes=1))
    rebuilt = rebuild_state(
        [MarkedNode(node, "w")], [node], [job("n", "b1")], {"w": SELECT_ALL}, NOW
    )
    assert rebuilt.state.nodes["n"].phase == Phase.DRAINING
    # Flagged before the Job was made (the detector has not cleared it yet): rebooted now.
    node = view("n", "b2", since=EARLIER - timedelta(minutes=1))
    rebuilt = rebuild_state(
        [MarkedNode(node, "w")], [node], [job("n", "b1")], {"w": SELECT_ALL}, NOW
    )
    assert rebuilt.state.nodes["n"].phase == Phase.HEALTH_CHECK


def test_a_node_of_a_deleted_window_finishes_with_the_defaults() -> None:
    node = view("n", "b1")
    rebuilt = rebuild_state([MarkedNode(node, "gone")], [node], [job("n", "b1")], {}, NOW)
    assert rebuilt.state.nodes["n"].window == "gone"
    assert rebuilt.state.nodes["n"].phase == Phase.WAITING_FOR_NODE
