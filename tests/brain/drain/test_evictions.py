"""The drain's evictions: one eviction's answers, arrivals during the drain, refusals retried
when their budget allows again (with the budget watch on a scripted stream)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from brain.drain.budget_watch import BudgetWatch
from brain.drain.classify import DrainOptions, PodRef
from brain.drain.evictions import DrainResult, _drain_listed, blocking_budget, evict_once
from brain.drain.pod_watch import NodePodWatch
from tests.brain.drain.fakes import (
    FakeCore,
    FakePolicy,
    FakeStream,
    ScriptedStream,
    pod,
    web_budget,
    wired,
)

DEFAULTS = DrainOptions()


async def drain_listed(
    core: Any, options: DrainOptions, deadline: datetime, pods: list[dict[str, Any]]
) -> DrainResult:
    """Drain node-1 of `pods`, listed at resourceVersion 10 and watched from there, `core`
    answering the requests."""
    api = wired(core)
    watch = NodePodWatch(api, "node-1")
    watch.start("10")
    try:
        return await _drain_listed(api, "node-1", options, deadline, pods, watch)
    finally:
        await watch.stop()


def test_the_blocking_budget_is_read_from_the_429_cause() -> None:
    status = {
        "kind": "Status",
        "code": 429,
        "details": {
            "causes": [
                {
                    "reason": "DisruptionBudget",
                    "message": "The disruption budget web needs 2 healthy pods and has 2 currently",
                }
            ]
        },
    }
    assert blocking_budget("shop", status) == "shop/web"
    assert (
        blocking_budget(
            "shop", {"details": {"causes": [{"reason": "Other", "message": "disruption budget x"}]}}
        )
        is None
    )
    assert blocking_budget("shop", {}) is None


def test_an_eviction_carries_the_uid_precondition_and_grace_period() -> None:
    core = FakeCore(None)
    answer = evict_once(wired(core), PodRef("shop", "web-1", "u1"), 7)
    assert answer.outcome.value == "evicted"
    ((name, namespace, body),) = core.calls
    assert (name, namespace) == ("web-1", "shop")
    assert body["deleteOptions"] == {"preconditions": {"uid": "u1"}, "gracePeriodSeconds": 7}
    assert body["kind"] == "Eviction" and body["apiVersion"] == "policy/v1"


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (404, {"message": 'pods "web-1" not found'}, "gone"),
        (409, {"message": "the UID in the precondition (u1) does not match"}, "gone"),
        (409, {"message": "the object has been modified"}, "error"),
        (429, {"message": "Cannot evict pod"}, "blocked"),
        (500, {"message": "This pod has more than one PodDisruptionBudget"}, "error"),
    ],
)
def test_eviction_answers(status: int, body: dict[str, Any], outcome: str) -> None:
    answer = evict_once(wired(FakeCore(status, body)), PodRef("shop", "web-1", "u1"), None)
    assert answer.outcome.value == outcome
    if outcome == "error":
        assert str(status) in answer.error and body["message"] in answer.error


class FakeArrivalCore(FakeCore):
    """Evictions refused (429); the node's watch shows a bare pod arriving, then starting."""

    def __init__(self) -> None:
        super().__init__(429)
        self.streams: list[FakeStream] = []

    def list_pod_for_all_namespaces(self, **arguments: Any) -> Any:
        pending = pod("late", namespace="n", owner=None, phase="Pending", uid="ul")
        running = pod("late", namespace="n", owner=None, phase="Running", uid="ul")
        stream = FakeStream(
            [{"type": "ADDED", "object": pending}, {"type": "MODIFIED", "object": running}]
        )
        self.streams.append(stream)
        return stream


def test_a_refused_pod_that_arrives_stops_the_drain_and_is_reported_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("brain.drain.evictions.list_budgets", lambda api: [])
    held = pod("held", namespace="n", uid="uh")
    deadline = datetime.now(UTC) + timedelta(seconds=10)

    result = asyncio.run(drain_listed(FakeArrivalCore(), DEFAULTS, deadline, [held]))
    assert not result.completed
    assert [str(problem) for problem in result.problems] == [
        "n/late: has no controller (set force to delete it)"
    ]
    assert result.message == (
        "cannot drain node node-1: arrived during the drain: "
        "n/late: has no controller (set force to delete it)"
    )
    assert sorted(ref.name for ref in result.remaining) == ["held", "late"]


class FakeDaemonSetArrivalCore(FakeArrivalCore):
    """Evictions refused (429); the node's watch shows a DaemonSet pod, already listed, change
    twice, and a new one arrive."""

    def list_pod_for_all_namespaces(self, **arguments: Any) -> Any:
        known = pod("agent-1", namespace="n", owner="DaemonSet", uid="a1")
        new = pod("agent-2", namespace="n", owner="DaemonSet", uid="a2")
        events = [("MODIFIED", known), ("MODIFIED", known), ("ADDED", new)]
        stream = FakeStream([{"type": kind, "object": item} for kind, item in events])
        self.streams.append(stream)
        return stream


def test_the_drain_counts_the_daemon_set_pods_it_saw_on_the_node_once_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The health gate lists the node's pods after the reboot only if there were some."""
    monkeypatch.setattr("brain.drain.evictions.list_budgets", lambda api: [])
    deadline = datetime.now(UTC) + timedelta(seconds=0.5)
    agent = pod("agent-1", namespace="n", owner="DaemonSet", uid="a1")
    web = pod("web", namespace="n", uid="uw")
    result = asyncio.run(drain_listed(FakeDaemonSetArrivalCore(), DEFAULTS, deadline, [agent, web]))
    assert result.daemon_set_pods == 2
    empty = asyncio.run(drain_listed(FakeBlockedCore(), DEFAULTS, deadline, []))
    assert empty.completed and empty.daemon_set_pods == 0


class FakeBlockedCore(FakeCore):
    """Every eviction refused by the budget `web`; the node's watch shows nothing new."""

    def __init__(self) -> None:
        cause = {"reason": "DisruptionBudget", "message": "The disruption budget web needs 2"}
        super().__init__(429, {"code": 429, "details": {"causes": [cause]}})

    def list_pod_for_all_namespaces(self, **arguments: Any) -> Any:
        return FakeStream([])


def test_a_drain_logs_its_blocking_budget_once_however_often_it_retries(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("brain.drain.evictions.list_budgets", lambda api: [])
    monkeypatch.setattr(
        "brain.drain.evictions.BudgetWatch",
        lambda _api: BudgetWatch(wired(FakePolicy(web_budget(0)))),
        raising=False,
    )
    core = FakeBlockedCore()
    options = DrainOptions(eviction_retry_seconds=0.05)
    deadline = datetime.now(UTC) + timedelta(seconds=1)
    held = [pod("web-1", namespace="shop", uid="u1"), pod("web-2", namespace="shop", uid="u3")]
    with caplog.at_level("INFO", logger="brain.drain.evictions"):
        result = asyncio.run(drain_listed(core, options, deadline, held))
    assert not result.completed and result.blocking_pdbs == ("shop/web",)
    assert len(core.calls) >= 10, "the evictions were not retried: nothing to rate-limit"
    blocked = [record.getMessage() for record in caplog.records if "blocked" in record.getMessage()]
    assert len(blocked) == 1 and blocked[0].startswith(
        "drain of node node-1 blocked: PDB shop/web refuses evicting pod shop/web-"
    )


class TimedBlockedCore(FakeBlockedCore):
    """Refuses every eviction (budget `web`) and notes when each was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.started = time.monotonic()
        self.times: list[float] = []

    def create_namespaced_pod_eviction(self, *arguments: Any, **keywords: Any) -> None:
        self.times.append(time.monotonic() - self.started)
        super().create_namespaced_pod_eviction(*arguments, **keywords)


def drain_refused_by_web(
    monkeypatch: pytest.MonkeyPatch,
    policy: FakePolicy,
    script: Callable[[ScriptedStream], None],
    retry_seconds: float = 5.0,
    seconds: float = 1.5,
) -> TimedBlockedCore:
    """Drain one pod that `web` refuses for `seconds`, while `script` plays the PDB's changes."""
    monkeypatch.setattr("brain.drain.evictions.list_budgets", lambda api: [])
    monkeypatch.setattr(
        "brain.drain.evictions.BudgetWatch",
        lambda _api: BudgetWatch(wired(policy)),
        raising=False,  # the code before budget watches had none: the test fails, not errors
    )

    def play() -> None:
        if policy.opened.wait(seconds):
            script(policy.streams[-1])

    player = threading.Thread(target=play, daemon=True)
    core = TimedBlockedCore()
    options = DrainOptions(eviction_retry_seconds=retry_seconds)
    deadline = datetime.now(UTC) + timedelta(seconds=seconds)
    held = [pod("web-1", namespace="shop", uid="u1")]
    player.start()
    asyncio.run(drain_listed(core, options, deadline, held))
    player.join()
    return core


def test_a_refused_eviction_is_retried_as_soon_as_its_budget_allows_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def replacement_ready(stream: ScriptedStream) -> None:
        time.sleep(0.3)
        stream.send("MODIFIED", web_budget(1))

    core = drain_refused_by_web(monkeypatch, FakePolicy(web_budget(0)), replacement_ready)
    assert len(core.times) == 2, f"evictions at {core.times}: not retried when web allowed one"
    assert 0.3 <= core.times[1] - core.times[0] < 0.8


def test_a_refused_eviction_is_retried_once_per_change_of_its_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def changes(stream: ScriptedStream) -> None:
        time.sleep(0.2)
        stream.send("MODIFIED", web_budget(0))  # a change that allows nothing
        stream.send("MODIFIED", web_budget(1, generation=2, observed=1))  # status not current
        time.sleep(0.2)
        stream.send("MODIFIED", web_budget(1))  # allows: one retry (refused again, say)
        time.sleep(0.4)
        stream.send("MODIFIED", web_budget(2))  # allows again: one more retry

    core = drain_refused_by_web(monkeypatch, FakePolicy(web_budget(0)), changes)
    assert len(core.times) == 3, f"evictions at {core.times}: expected one per allowing change"
    assert 0.35 <= core.times[1] < 0.7 and 0.75 <= core.times[2] < 1.1


def test_a_budget_allowing_when_the_watch_opens_is_retried_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    core = drain_refused_by_web(
        monkeypatch, FakePolicy(web_budget(1)), lambda stream: None, seconds=0.5
    )
    assert len(core.times) >= 2 and core.times[1] < 0.3, core.times


def test_a_budget_that_never_allows_costs_one_eviction_per_pace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def busy_but_refusing(stream: ScriptedStream) -> None:
        for _ in range(25):  # a change every 50 ms, none allowing a disruption
            time.sleep(0.05)
            stream.send("MODIFIED", web_budget(0))

    policy = FakePolicy(web_budget(0))
    core = drain_refused_by_web(
        monkeypatch, policy, busy_but_refusing, retry_seconds=0.4, seconds=1.5
    )
    gaps = [later - earlier for earlier, later in zip(core.times, core.times[1:], strict=False)]
    assert 3 <= len(core.times) <= 4 and all(gap >= 0.38 for gap in gaps), core.times
    assert len(policy.streams) == 1, "one PDB watch per drain"
