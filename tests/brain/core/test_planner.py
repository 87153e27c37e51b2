"""The planner: governing, budgets, order, gates, batches; property tests on random clusters."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from brain.core.lock_state import CompletedReboot, LockState, NodeLease, WindowRecord
from brain.core.node_view import NodeView
from brain.core.phase import IN_MAINTENANCE, Phase
from brain.core.planner import HoldReason, NamedWindow, Plan, WindowPlan, make_plan
from brain.core.window import parse_window_spec

NOW = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)  # a Wednesday
ZONE = "topology.kubernetes.io/zone"


def window(name: str, **spec: Any) -> NamedWindow:
    return NamedWindow(name, parse_window_spec(spec, name))


def node(
    name: str,
    *,
    flagged: bool = True,
    zone: str = "a",
    pool: str = "general",
    since_minutes_ago: int | None = 60,
    **fields: Any,
) -> NodeView:
    since = NOW - timedelta(minutes=since_minutes_ago) if since_minutes_ago is not None else None
    return NodeView(
        name=name,
        labels={ZONE: zone, "pool": pool},
        reboot_required=flagged,
        reboot_required_since=since if flagged else None,
        **fields,
    )


def lease(window_name: str, phase: Phase = Phase.DRAINING, domain: str = "") -> NodeLease:
    return NodeLease(window=window_name, phase=phase, since=NOW, domain=domain)


def plan_one(
    spec_window: NamedWindow,
    nodes: list[NodeView],
    lock: LockState | None = None,
    now: datetime = NOW,
    blockers: dict[str, str | None] | None = None,
) -> WindowPlan:
    plan = make_plan([spec_window], nodes, lock or LockState(), now, blockers)
    return plan.window(spec_window.name)


def started(window_plan: WindowPlan) -> list[str]:
    return [start.node for start in window_plan.starts]


def reasons(window_plan: WindowPlan) -> dict[str, HoldReason]:
    return {held.node: held.reason for held in window_plan.held_back}


# --- Governing. --------------------------------------------------------------------------------


def test_highest_priority_window_governs_and_a_tie_is_a_conflict_for_both() -> None:
    everyone = window("everyone")
    gpu_takeover = window(
        "gpu-takeover", priority=10, nodeSelector={"matchLabels": {"pool": "gpu"}}
    )
    gpu_rival = window("gpu-rival", priority=10, nodeSelector={"matchLabels": {"pool": "gpu"}})
    nodes = [node("cpu-1"), node("gpu-1", pool="gpu")]

    plan = make_plan([everyone, gpu_takeover], nodes, LockState(), NOW)
    assert dict(plan.governing) == {"cpu-1": "everyone", "gpu-1": "gpu-takeover"}
    assert plan.conflicts == ()

    plan = make_plan([everyone, gpu_takeover, gpu_rival], nodes, LockState(), NOW)
    assert dict(plan.governing) == {"cpu-1": "everyone"}
    assert [(c.node, c.windows, c.priority) for c in plan.conflicts] == [
        ("gpu-1", ("gpu-rival", "gpu-takeover"), 10)
    ]
    for name in ("gpu-rival", "gpu-takeover"):
        window_plan = plan.window(name)
        assert window_plan.governed == ()
        assert started(window_plan) == []
        assert reasons(window_plan) == {"gpu-1": HoldReason.CONFLICT}
        assert [c.node for c in window_plan.conflicts] == ["gpu-1"]
    assert started(plan.window("everyone")) == ["cpu-1"]


def test_match_expressions_follow_kubernetes_semantics() -> None:
    selector = {
        "matchExpressions": [
            {"key": "pool", "operator": "In", "values": ["general", "gpu"]},
            {"key": ZONE, "operator": "NotIn", "values": ["c"]},
            {"key": "pitstop.dev/skip", "operator": "DoesNotExist"},
            {"key": "pool", "operator": "Exists"},
        ]
    }
    nodes = [
        node("match"),
        node("other-pool", pool="storage"),
        node("zone-c", zone="c"),
        NodeView(name="skipped", labels={"pool": "gpu", "pitstop.dev/skip": ""}),
        NodeView(name="no-zone", labels={"pool": "gpu"}),
    ]
    plan = make_plan([window("w", nodeSelector=selector)], nodes, LockState(), NOW)
    assert sorted(plan.governing) == ["match", "no-zone"]


# --- Budget and order. -------------------------------------------------------------------------


def test_starts_up_to_the_budget_in_order_and_numbers_the_batches() -> None:
    nodes = [
        node("n-old", since_minutes_ago=500),
        node("n-young", since_minutes_ago=5),
        node("n-none", since_minutes_ago=None),
        node("n-prio", priority=5),
        node("n-b", since_minutes_ago=100),
        node("n-a", since_minutes_ago=100),
        node("n-emergency", emergency=True, since_minutes_ago=1),
        node("not-flagged", flagged=False),
    ]
    window_plan = plan_one(window("w", maxUnavailable=2), nodes)
    order = ["n-emergency", "n-prio", "n-old", "n-a", "n-b", "n-young", "n-none"]
    assert [pending.name for pending in window_plan.pending] == order
    assert [pending.batch for pending in window_plan.pending] == [1, 1, 2, 2, 3, 3, 4]
    assert started(window_plan) == order[:2]
    assert all(reasons(window_plan)[name] is HoldReason.NO_BUDGET for name in order[2:])
    assert window_plan.budget.limit == 2
    assert len(window_plan.governed) == 8


def test_percentages_round_down_with_a_minimum_of_one() -> None:
    many = [node(f"n{i:02d}") for i in range(25)]
    assert plan_one(window("w", maxUnavailable="10%"), many).budget.limit == 2
    assert len(started(plan_one(window("w", maxUnavailable="10%"), many))) == 2
    assert plan_one(window("w", maxUnavailable="10%"), many[:5]).budget.limit == 1


def test_lease_holders_use_the_budget_and_batches_start_with_what_is_left() -> None:
    nodes = [node(f"n{i}", since_minutes_ago=100 - i) for i in range(6)]
    lock = LockState(nodes={"n0": lease("w", Phase.REBOOTING), "other": lease("other-window")})
    window_plan = plan_one(window("w", maxUnavailable=3), nodes, lock)
    assert window_plan.in_maintenance == ("n0",)
    assert window_plan.budget.used == 1
    assert window_plan.budget.available == 2
    assert started(window_plan) == ["n1", "n2"]
    assert [(p.name, p.batch) for p in window_plan.pending] == [
        ("n1", 1),
        ("n2", 1),
        ("n3", 2),
        ("n4", 2),
        ("n5", 2),
    ]


def test_unhealthy_nodes_use_the_budget_unless_count_unhealthy_is_false() -> None:
    nodes = [node("flagged"), node("down", flagged=False, ready=False)]
    assert started(plan_one(window("w"), nodes)) == []
    assert plan_one(window("w"), nodes).unhealthy == ("down",)
    assert started(plan_one(window("w", countUnhealthy=False), nodes)) == ["flagged"]


def test_a_cordoned_flagged_node_starts_without_taking_a_second_slot() -> None:
    nodes = [node("cordoned", unschedulable=True), node("healthy")]
    window_plan = plan_one(window("w"), nodes)
    assert window_plan.budget.used == 1
    assert started(window_plan) == ["cordoned"]
    assert reasons(window_plan) == {"healthy": HoldReason.NO_BUDGET}


def test_topology_limits_each_domain() -> None:
    nodes = [
        node("a1", zone="a", since_minutes_ago=10),
        node("a2", zone="a", since_minutes_ago=20),
        node("b1", zone="b", since_minutes_ago=5),
        node("b2", zone="b", since_minutes_ago=1),
        node("c1", zone="c"),
    ]
    spec = window("w", maxUnavailable=2, topology={"key": ZONE, "maxUnavailable": 1})
    window_plan = plan_one(spec, nodes)
    assert started(window_plan) == ["c1", "a2"]
    assert reasons(window_plan)["a1"] is HoldReason.NO_BUDGET
    # With zone c busy (recorded in its lease), a and b go.
    lock = LockState(nodes={"c1": lease("w", domain="c")})
    window_plan = plan_one(window("w", maxUnavailable=3, topology={"key": ZONE}), nodes, lock)
    assert started(window_plan) == ["a2", "b1"]
    assert reasons(window_plan)["a1"] is HoldReason.NO_DOMAIN_BUDGET
    assert {d.domain: d.budget.used for d in window_plan.domains} == {"a": 0, "b": 0, "c": 1}


# --- Gates. ------------------------------------------------------------------------------------

SATURDAY_NIGHTS = {
    "timeZone": "UTC",
    "windows": [{"days": ["Sat"], "start": "22:00", "end": "04:00"}],
}


def test_closed_window_starts_only_emergencies_and_says_when_it_opens() -> None:
    nodes = [node("normal"), node("urgent", emergency=True)]
    window_plan = plan_one(window("w", maxUnavailable=5, schedule=SATURDAY_NIGHTS), nodes)
    assert not window_plan.is_open
    assert started(window_plan) == ["urgent"]
    assert window_plan.starts[0].emergency
    (held,) = window_plan.held_back
    assert held.reason is HoldReason.WINDOW_CLOSED
    assert "2025-06-07T22:00:00+00:00" in held.message
    assert window_plan.next_open == datetime(2025, 6, 7, 22, tzinfo=UTC)
    assert window_plan.next_close == datetime(2025, 6, 8, 4, tzinfo=UTC)
    assert window_plan.open_until is None


def test_open_window_reports_its_end_and_the_following_opening() -> None:
    saturday_night = datetime(2025, 6, 7, 23, tzinfo=UTC)
    window_plan = plan_one(window("w", schedule=SATURDAY_NIGHTS), [node("n")], now=saturday_night)
    assert window_plan.is_open
    assert window_plan.open_until == datetime(2025, 6, 8, 4, tzinfo=UTC)
    assert window_plan.next_open == datetime(2025, 6, 14, 22, tzinfo=UTC)
    assert started(window_plan) == ["n"]


def test_suspend_holds_everyone_including_emergencies() -> None:
    window_plan = plan_one(window("w", suspend=True), [node("urgent", emergency=True)])
    assert started(window_plan) == []
    assert reasons(window_plan) == {"urgent": HoldReason.SUSPENDED}


def test_a_failed_node_pauses_its_window_only() -> None:
    nodes = [node("broken", flagged=False), node("next"), node("elsewhere", pool="gpu")]
    lock = LockState(nodes={"broken": lease("w", Phase.FAILED)})
    windows = [
        window("w", maxUnavailable=5, nodeSelector={"matchLabels": {"pool": "general"}}),
        window("gpu", nodeSelector={"matchLabels": {"pool": "gpu"}}),
    ]
    plan = make_plan(windows, nodes, lock, NOW)
    assert plan.window("w").failed == ("broken",)
    assert reasons(plan.window("w")) == {"next": HoldReason.PAUSED_BY_FAILURE}
    assert started(plan.window("gpu")) == ["elsewhere"]


def test_blockers_hold_all_but_emergencies() -> None:
    nodes = [node("normal"), node("urgent", emergency=True)]
    window_plan = plan_one(
        window("w", maxUnavailable=5), nodes, blockers={"w": "alert KernelPanic firing"}
    )
    assert started(window_plan) == ["urgent"]
    assert window_plan.held_back[0].reason is HoldReason.BLOCKED
    assert "KernelPanic" in window_plan.held_back[0].message


def test_delay_between_nodes_counts_from_the_last_finish() -> None:
    spec = window("w", reboot={"delayBetweenNodes": "10m"})
    recent = LockState(windows={"w": WindowRecord(lastFinished=NOW - timedelta(minutes=4))})
    window_plan = plan_one(spec, [node("n")], recent)
    assert reasons(window_plan) == {"n": HoldReason.DELAY_BETWEEN_NODES}
    assert window_plan.delay_until == NOW + timedelta(minutes=6)
    old = LockState(windows={"w": WindowRecord(lastFinished=NOW - timedelta(minutes=11))})
    assert started(plan_one(spec, [node("n")], old)) == ["n"]


def test_nodes_already_in_the_lock_never_start_again() -> None:
    lock = LockState(nodes={"busy": lease("w"), "done": lease("w", Phase.DONE)})
    window_plan = plan_one(window("w", maxUnavailable=5), [node("busy"), node("done")], lock)
    assert started(window_plan) == []
    assert window_plan.pending == ()
    assert reasons(window_plan) == {"done": HoldReason.IN_LOCK}


# --- Resting nodes. ----------------------------------------------------------------------------


def rebooted_record(name: str, boot: str, minutes_ago: int) -> WindowRecord:
    finished = NOW - timedelta(minutes=minutes_ago)
    return WindowRecord(
        completed=[CompletedReboot(node=name, finished=finished, result="Rebooted", bootID=boot)]
    )


def test_a_node_the_lock_shows_rebooted_at_its_boot_rests_until_flagged_anew() -> None:
    everyone = window("everyone")
    # Still flagged from before the reboot (flag 60 min old, reboot finished 5 min ago).
    stale = node("n1", boot_id="boot-2")
    lock = LockState(windows={"everyone": rebooted_record("n1", "boot-2", 5)})
    rested = plan_one(everyone, [stale], lock)
    assert rested.pending == () and started(rested) == []
    assert reasons(rested) == {"n1": HoldReason.RESTING}
    # The lock records the reboot: the very plan made on that lock rests the node, which is
    # what keeps a window's status from showing it Pending for one pass (and its Progressing
    # condition from going Waiting -> Idle, which posts no RolloutComplete).
    assert plan_one(everyone, [stale], LockState()).pending != ()
    # Flagged anew after the reboot (the detector saw a new sentinel): it may go again.
    anew = node("n1", boot_id="boot-2", since_minutes_ago=1)
    assert started(plan_one(everyone, [anew], lock)) == ["n1"]
    # Rebooted at another boot (it rebooted again since): the old record does not hold it.
    other_boot = node("n1", boot_id="boot-3")
    assert started(plan_one(everyone, [other_boot], lock)) == ["n1"]


def test_a_view_older_than_a_recorded_reboot_does_not_admit_the_node_again() -> None:
    # Two brains: one finished n1 (boot-1 -> boot-2) a moment ago; the other's Node watch still
    # shows boot-1 and the flag. Admitting it would drain it and create a Job for a second
    # reboot once the view catches up (seen in a two-brain run).
    everyone = window("everyone")
    finished = NOW - timedelta(seconds=1)
    record = WindowRecord(
        completed=[
            CompletedReboot(
                node="n1",
                finished=finished,
                result="Rebooted",
                bootID="boot-2",
                bootIDBefore="boot-1",
            )
        ]
    )
    lock = LockState(windows={"everyone": record})
    for since_minutes_ago in (60, 0):  # flagged before the reboot, or even "after" it
        stale = node("n1", boot_id="boot-1", since_minutes_ago=since_minutes_ago)
        held = plan_one(everyone, [stale], lock)
        assert started(held) == [] and reasons(held) == {"n1": HoldReason.RESTING}
        assert "new boot" in held.held_back[0].message
    # Once the view shows boot-2 and a flag from after the reboot, it may go again.
    anew = node("n1", boot_id="boot-2", since_minutes_ago=0)
    assert started(plan_one(everyone, [anew], lock)) == ["n1"]


def test_a_node_released_after_its_reboot_rests_like_a_rebooted_one() -> None:
    # A person released n1 in WaitingForNode or HealthCheck after it rebooted (boot-1 ->
    # boot-2) while its detector had not yet removed the flag. Admitted again at once (the
    # release's own lock write hands the slot on), it was rebooted a second time: found by the
    # rollout model test (tests/brain/core/test_rollout_model.py).
    everyone = window("everyone")

    def released(boot_before: str, boot: str) -> LockState:
        finished = NOW - timedelta(seconds=1)
        done = CompletedReboot(
            node="n1", finished=finished, result="Released", bootID=boot, bootIDBefore=boot_before
        )
        return LockState(windows={"everyone": WindowRecord(completed=[done])})

    stale = node("n1", boot_id="boot-2")
    held = plan_one(everyone, [stale], released("boot-1", "boot-2"))
    assert started(held) == [] and reasons(held) == {"n1": HoldReason.RESTING}
    # A view still showing the boot it was rebooted from waits for the view, too.
    lagging = plan_one(everyone, [node("n1", boot_id="boot-1")], released("boot-1", "boot-2"))
    assert reasons(lagging) == {"n1": HoldReason.RESTING}
    # Released before it rebooted (same boot): no such rest (its retryAfter decides).
    assert started(plan_one(everyone, [stale], released("boot-2", "boot-2"))) == ["n1"]
    # Flagged anew after the reboot: it may go again.
    anew = node("n1", boot_id="boot-2", since_minutes_ago=0)
    assert started(plan_one(everyone, [anew], released("boot-1", "boot-2"))) == ["n1"]


def test_a_node_whose_drain_was_aborted_rests_until_its_retry_time() -> None:
    everyone = window("everyone")
    retry_at = NOW + timedelta(minutes=10)
    lock = LockState(windows={"everyone": WindowRecord(retryAfter={"n1": retry_at})})
    resting = plan_one(everyone, [node("n1")], lock)
    assert resting.pending == () and reasons(resting) == {"n1": HoldReason.RESTING}
    assert "2025-06-04T12:10:00Z" in resting.held_back[0].message
    later = plan_one(everyone, [node("n1")], lock, now=retry_at + timedelta(seconds=1))
    assert started(later) == ["n1"]


# --- Property tests on random clusters. --------------------------------------------------------

ZONES = ["a", "b", "c"]
POOLS = ["general", "gpu"]


@st.composite
def int_or_percent(draw: st.DrawFn) -> int | str:
    if draw(st.booleans()):
        return draw(st.integers(1, 4))
    return f"{draw(st.integers(1, 100))}%"


@st.composite
def random_windows(draw: st.DrawFn) -> list[NamedWindow]:
    result = []
    for index in range(draw(st.integers(1, 3))):
        spec: dict[str, Any] = {
            "priority": draw(st.integers(0, 2)),
            "maxUnavailable": draw(int_or_percent()),
            "countUnhealthy": draw(st.booleans()),
            "suspend": draw(st.booleans()) and draw(st.booleans()),
        }
        pool = draw(st.sampled_from([None, *POOLS]))
        if pool is not None:
            spec["nodeSelector"] = {"matchLabels": {"pool": pool}}
        if draw(st.booleans()):
            spec["topology"] = {"key": ZONE, "maxUnavailable": draw(int_or_percent())}
        if draw(st.booleans()):
            # Open on Saturday nights only: closed at most random instants in the test week.
            spec["schedule"] = SATURDAY_NIGHTS
        if draw(st.booleans()):
            spec["reboot"] = {"delayBetweenNodes": f"{draw(st.integers(0, 30))}m"}
        result.append(window(f"w{index}", **spec))
    return result


@st.composite
def clusters(
    draw: st.DrawFn,
) -> tuple[list[NamedWindow], list[NodeView], LockState, datetime, dict[str, str | None]]:
    windows = draw(random_windows())
    window_names = [w.name for w in windows]
    nodes = []
    leases: dict[str, NodeLease] = {}
    for index in range(draw(st.integers(0, 14))):
        since = draw(st.sampled_from([None, 10, 20, 30]))
        nodes.append(
            node(
                f"node-{index:02d}",
                flagged=draw(st.booleans()),
                zone=draw(st.sampled_from(ZONES)),
                pool=draw(st.sampled_from(POOLS)),
                since_minutes_ago=since,
                priority=draw(st.integers(0, 2)),
                emergency=draw(st.integers(0, 5)) == 0,
                ready=draw(st.integers(0, 4)) != 0,
                unschedulable=draw(st.integers(0, 4)) == 0,
            )
        )
        if draw(st.integers(0, 3)) == 0:
            leases[f"node-{index:02d}"] = NodeLease(
                window=draw(st.sampled_from(window_names)),
                phase=draw(st.sampled_from(list(Phase))),
                since=NOW,
                domain=draw(st.sampled_from(["", *ZONES])),
            )
    records = {
        name: WindowRecord(lastFinished=NOW - timedelta(minutes=draw(st.integers(0, 40))))
        for name in window_names
        if draw(st.booleans())
    }
    now = NOW + timedelta(hours=draw(st.integers(0, 24 * 7)))
    blockers = {name: draw(st.sampled_from([None, "blocked"])) for name in window_names}
    return windows, nodes, LockState(nodes=leases, windows=records), now, blockers


def domain_of(view: NodeView | None, lease: NodeLease | None, window_plan: WindowPlan) -> str:
    """The test's own idea of a node's domain: the lease's record first, then the label."""
    if window_plan.topology_key is None:
        return ""
    if lease is not None and lease.domain:
        return lease.domain
    return view.labels.get(window_plan.topology_key, "") if view is not None else ""


@settings(max_examples=400, deadline=None)
@given(cluster=clusters())
def test_never_more_unavailable_than_the_budget(
    cluster: tuple[list[NamedWindow], list[NodeView], LockState, datetime, dict[str, str | None]],
) -> None:
    windows, nodes, lock, now, blockers = cluster
    plan = make_plan(windows, nodes, lock, now, blockers)
    views = {view.name: view for view in nodes}
    slot_holders = {name for name, held in lock.nodes.items() if held.phase in IN_MAINTENANCE}
    for named in windows:
        window_plan = plan.window(named.name)
        spec = named.spec
        holders = [
            name
            for name, held in lock.nodes.items()
            if held.window == named.name and held.phase in IN_MAINTENANCE
        ]
        governed = [name for name, owner in plan.governing.items() if owner == named.name]
        unhealthy = {
            name
            for name in governed
            if name not in slot_holders and (not views[name].ready or views[name].unschedulable)
        }
        counted = unhealthy if spec.count_unhealthy else set()
        starts = {start.node for start in window_plan.starts}
        limit = window_plan.budget.limit
        assert limit >= 1
        # Lease holders plus starts never exceed the limit ...
        assert len(holders) + len(starts) <= max(limit, len(holders))
        # ... and counting the unhealthy ones, starts never make things worse than the limit.
        assert len(holders) + len(starts | counted) <= max(limit, len(holders) + len(counted))
        # Per domain, the same with the test's own domain bookkeeping.
        if window_plan.topology_key is not None:
            per_domain_limit = {d.domain: d.budget.limit for d in window_plan.domains}
            held_in = Counter(domain_of(views.get(n), lock.nodes[n], window_plan) for n in holders)
            starts_in = Counter(domain_of(views[n], None, window_plan) for n in starts)
            counted_in = Counter(domain_of(views[n], None, window_plan) for n in counted - starts)
            for domain, count in starts_in.items():
                assert held_in[domain] + count <= per_domain_limit[domain]
                assert held_in[domain] + count + counted_in[domain] <= max(
                    per_domain_limit[domain],
                    held_in[domain]
                    + Counter(domain_of(views[n], None, window_plan) for n in counted)[domain],
                )
        # Every start is a flagged node governed by this window and absent from the lock.
        for name in starts:
            assert plan.governing[name] == named.name
            assert views[name].reboot_required
            assert name not in lock.nodes
        # Gates.
        if starts:
            assert not spec.suspend
            assert not window_plan.failed
            assert window_plan.delay_until is None
        for start in window_plan.starts:
            if not window_plan.is_open or blockers.get(named.name):
                assert start.emergency


@settings(max_examples=200, deadline=None)
@given(cluster=clusters(), seed=st.integers(0, 2**32))
def test_the_plan_does_not_depend_on_input_order(
    cluster: tuple[list[NamedWindow], list[NodeView], LockState, datetime, dict[str, str | None]],
    seed: int,
) -> None:
    windows, nodes, lock, now, blockers = cluster
    shuffler = random.Random(seed)
    shuffled_windows = shuffler.sample(windows, len(windows))
    shuffled_nodes = shuffler.sample(nodes, len(nodes))
    assert make_plan(shuffled_windows, shuffled_nodes, lock, now, blockers) == make_plan(
        windows, nodes, lock, now, blockers
    )


def pending_key(window_plan: WindowPlan, name: str) -> int:
    return [pending.name for pending in window_plan.pending].index(name)


@settings(max_examples=300, deadline=None)
@given(cluster=clusters())
def test_queue_order_batches_and_reasons_are_consistent(
    cluster: tuple[list[NamedWindow], list[NodeView], LockState, datetime, dict[str, str | None]],
) -> None:
    windows, nodes, lock, now, blockers = cluster
    plan: Plan = make_plan(windows, nodes, lock, now, blockers)
    views = {view.name: view for view in nodes}
    assert not set(plan.governing) & {conflict.node for conflict in plan.conflicts}
    for window_plan in plan.windows:
        queue = window_plan.pending
        # The queue is sorted by (emergency, priority, since, name).
        for earlier, later in itertools.pairwise(queue):
            first, second = views[earlier.name], views[later.name]
            assert (not first.emergency, -first.priority) <= (
                not second.emergency,
                -second.priority,
            )
        # Starts are a prefix-respecting subsequence of the queue.
        positions = [pending_key(window_plan, start.node) for start in window_plan.starts]
        assert positions == sorted(positions)
        # Every pending node either starts or has exactly one reason.
        held = [h.node for h in window_plan.held_back if h.reason is not HoldReason.CONFLICT]
        pending_names = [p.name for p in queue]
        assert len(held) == len(set(held))
        assert set(pending_names) <= set(held) | {start.node for start in window_plan.starts}
        # Batches start at 1 and never skip a number ...
        batches = sorted({p.batch for p in queue})
        assert batches == list(range(1, len(batches) + 1))
        # ... and no batch holds more nodes than the full budget.
        sizes = Counter(p.batch for p in queue)
        assert all(size <= window_plan.budget.limit for size in sizes.values())
        # When nothing holds the window back, batch 1 is exactly what starts now.
        gates_clear = (
            window_plan.is_open
            and not window_plan.suspended
            and not window_plan.failed
            and window_plan.blocked_reason is None
            and window_plan.delay_until is None
        )
        if gates_clear and window_plan.starts:
            assert [p.name for p in queue if p.batch == 1] == [s.node for s in window_plan.starts]
        elif gates_clear:
            budget_reasons = {HoldReason.NO_BUDGET, HoldReason.NO_DOMAIN_BUDGET}
            assert all(
                h.reason in budget_reasons for h in window_plan.held_back if h.node in pending_names
            )


# --- One window never breaks another. ----------------------------------------------------------


def test_a_window_the_planner_fails_on_is_reported_and_the_others_are_planned(
    monkeypatch: Any,
) -> None:
    import brain.core.planner as planner

    real = planner._plan_window

    def failing(window: NamedWindow, *args: Any) -> WindowPlan:
        if window.name == "broken":
            raise OverflowError("date value out of range\nsecond line")
        return real(window, *args)

    monkeypatch.setattr(planner, "_plan_window", failing)
    broken = window("broken", nodeSelector={"matchLabels": {"pool": "gpu"}})
    fine = window("fine", nodeSelector={"matchLabels": {"pool": "general"}})
    plan = make_plan([broken, fine], [node("g1", pool="gpu"), node("n1")], LockState(), NOW)
    assert plan.errors == {"broken": "OverflowError: date value out of range"}
    assert started(plan.window("fine")) == ["n1"]
    # The broken window still governs its node: no other window takes it meanwhile.
    assert plan.governing["g1"] == "broken"
    assert [window_plan.name for window_plan in plan.windows] == ["fine"]
