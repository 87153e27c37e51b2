"""The budget watch: opened at the first refusal, standing in for the list, failing safe."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from brain.drain.budget_watch import BudgetWatch, SharedBudgets
from brain.drain.budgets import pdbs_healthy
from tests.brain.drain.fakes import FakePolicy, WiredApi, web_budget, wired


def test_the_budget_watch_opens_at_the_first_refusal_and_counts_as_one_request() -> None:
    policy = FakePolicy(web_budget(0))
    api = WiredApi(policy.list_pod_disruption_budget_for_all_namespaces)

    async def scenario() -> tuple[bool, bool]:
        watch = BudgetWatch(api.api)
        mark = watch.mark()
        opened_before = policy.opened.is_set()
        waited = asyncio.create_task(watch.allowed_since("shop/web", mark, 2.0))
        await asyncio.to_thread(policy.opened.wait, 1.0)
        policy.streams[-1].send("DELETED", web_budget(0))  # gone: nothing refuses any more
        allowed = await waited
        await watch.stop()
        return opened_before, allowed

    opened_before, allowed = asyncio.run(scenario())
    assert not opened_before and allowed
    assert api.requests == {"watch poddisruptionbudgets": 1}


def test_the_budget_watch_stands_in_for_the_list_once_its_initial_state_is_complete() -> None:
    async def scenario() -> tuple[object, object, object, bool]:
        policy = FakePolicy(web_budget(0))
        watch = BudgetWatch(wired(policy))
        before = watch.budgets()  # not opened yet: the drain lists
        waited = asyncio.create_task(watch.allowed_since("shop/web", watch.mark(), 0.3))
        await asyncio.to_thread(policy.opened.wait, 1.0)
        await asyncio.sleep(0.1)
        after = watch.budgets()
        other = dict(web_budget(0), metadata={"namespace": "blog", "name": "db", "generation": 1})
        policy.streams[-1].send("ADDED", other)
        policy.streams[-1].send("DELETED", web_budget(0))
        await asyncio.sleep(0.1)
        later = watch.budgets()
        allowed = await waited
        await watch.stop()
        return before, after, later, allowed

    before, after, later, allowed = asyncio.run(scenario())
    assert before is None
    assert after == [web_budget(0)]
    assert later == [
        dict(web_budget(0), metadata={"namespace": "blog", "name": "db", "generation": 1})
    ]
    assert allowed, "a deleted budget refuses nothing"


class FlakyPolicy(FakePolicy):
    """The first watch fails; the next one (resumed) works."""

    def list_pod_disruption_budget_for_all_namespaces(self, **arguments: Any) -> Any:
        if not self.streams and not getattr(self, "failed", False):
            self.failed = True
            raise ApiException(status=500, reason="flaky")
        return super().list_pod_disruption_budget_for_all_namespaces(**arguments)


def test_a_budget_watch_that_failed_leaves_the_budgets_to_a_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("brain.watch_list.BACKOFF_FIRST_SECONDS", 0.05)

    async def scenario() -> object:
        policy = FlakyPolicy(web_budget(0))
        watch = BudgetWatch(wired(policy))
        waited = asyncio.create_task(watch.allowed_since("shop/web", watch.mark(), 0.5))
        await asyncio.to_thread(policy.opened.wait, 2.0)
        await waited
        await watch.stop()
        return watch.budgets()

    assert asyncio.run(scenario()) is None


class ForbiddingPolicy(FakePolicy):
    """The brain may not watch budgets (RBAC)."""

    def __init__(self) -> None:
        super().__init__(web_budget(1))
        self.calls = 0

    def list_pod_disruption_budget_for_all_namespaces(self, **arguments: Any) -> Any:
        self.calls += 1
        raise ApiException(status=403, reason="Forbidden")


def test_a_budget_watch_it_may_not_open_gives_up_and_refusals_wait_the_pace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("brain.watch_list.BACKOFF_FIRST_SECONDS", 0.05)

    async def scenario() -> tuple[bool, float, object]:
        policy = ForbiddingPolicy()
        watch = BudgetWatch(wired(policy))
        started = asyncio.get_running_loop().time()
        allowed = await watch.allowed_since("shop/web", watch.mark(), 0.5)
        waited = asyncio.get_running_loop().time() - started
        await watch.stop()
        assert policy.calls == 1, "asked again after a 403"
        return allowed, waited, watch.budgets()

    allowed, waited, budgets = asyncio.run(scenario())
    assert not allowed and waited >= 0.45 and budgets is None


def test_the_shared_budget_watch_serves_drains_and_health_gates_with_one_request() -> None:
    """Drains hold the brain's one budget watch; the health gate reads its view: a reboot reads
    no budget of its own. Unused for its idle time, the watch closes; the next user reopens."""
    policy = FakePolicy(web_budget(0))
    api = WiredApi(policy.list_pod_disruption_budget_for_all_namespaces)

    async def scenario() -> tuple[Any, ...]:
        shared = SharedBudgets(api.api, idle_seconds=0.3)
        first, second = shared.acquire(), shared.acquire()
        view = await shared.view()
        shared.release()
        shared.release()
        opened_once = api.requests.get("watch poddisruptionbudgets")
        await asyncio.sleep(0.6)  # idle: closed
        closed = first.view()
        again = await shared.view()
        await shared.close()
        return first is second, view, opened_once, closed, again

    same, view, opened_once, closed, again = asyncio.run(scenario())
    assert same and opened_once == 1
    assert view == {"shop/web": web_budget(0)}
    assert closed is None, "a closed watch's view is not current"
    assert again == {"shop/web": web_budget(0)}
    assert api.requests == {"watch poddisruptionbudgets": 2}


def test_the_health_gate_reads_budgets_from_a_view_without_a_request() -> None:
    api = WiredApi(lambda **_: pytest.fail("the health gate asked the API"))
    whole = {
        "metadata": {"namespace": "shop", "name": "web", "generation": 2},
        "status": {"observedGeneration": 2, "currentHealthy": 3, "expectedPods": 3},
    }
    short = {
        "metadata": {"namespace": "shop", "name": "db", "generation": 1},
        "status": {"observedGeneration": 1, "currentHealthy": 1, "expectedPods": 2},
    }
    view = {"shop/web": whole, "shop/db": short}
    healthy = asyncio.run(pdbs_healthy(api.api_client, ["shop/web", "shop/gone"], view))
    assert healthy == (True, "all PodDisruptionBudgets healthy")
    waiting = asyncio.run(pdbs_healthy(api.api_client, ["shop/web", "shop/db"], view))
    assert waiting == (False, "PDB shop/db: 1 of 2 pods healthy")
    assert api.requests == {}
