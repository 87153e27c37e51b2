"""The lock's ConfigMap store on the real API server: updates asked for together are written
together (group commit), nothing is lost when two brains write at once (optimistic
concurrency: 409, read, decide again), a budget decided inside `decide` is never exceeded, one
caller's refused decision does not hold back the others, and a cancelled writer leaves the
others' updates to the next write."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from kubernetes import client

from brain.core.lock_state import LockState, NodeLease
from brain.core.phase import Phase
from brain.kube import Kube
from brain.lock import LockStore

pytestmark = pytest.mark.cluster

LIMIT = 5
Decide = Callable[[LockState], LockState | None]


def admit(node: str, window: str, limit: int | None = None) -> Decide:
    """Admit `node` if `window` has a free slot (the flow's rule, decided inside the write)."""

    def decide(state: LockState) -> LockState | None:
        if node in state.nodes:
            return None
        if limit is not None and len(state.in_maintenance(window)) >= limit:
            return None
        state.nodes[node] = NodeLease(window=window, phase=Phase.DRAINING, since=datetime.now(UTC))
        return state

    return decide


def release(node: str) -> Decide:
    def decide(state: LockState) -> LockState | None:
        return state if state.nodes.pop(node, None) is not None else None

    return decide


def refuse(state: LockState) -> LockState | None:
    raise ValueError("illegal transition")


def own_client(api: client.ApiClient) -> client.ApiClient:
    """A client of its own (like a second brain's), so that its requests are counted apart."""
    return client.ApiClient(api.configuration)


def test_updates_asked_together_are_written_together_and_two_brains_lose_nothing(
    api_client: client.ApiClient, namespace: str
) -> None:
    apis = [own_client(api_client) for _ in range(2)]
    kubes = [Kube(api) for api in apis]
    stores = [LockStore(kube, namespace, "pitstop-lock") for kube in kubes]
    in_maintenance: list[int] = []

    async def scenario() -> LockState:
        # 40 changes from two brains at once: each is written, none lost to the other brain.
        await asyncio.gather(
            *(stores[index % 2].update(admit(f"x{index}", "x")) for index in range(40))
        )
        # 30 admissions for 5 slots from two brains at once: never past the budget.
        admitted = await asyncio.gather(
            *(stores[index % 2].update(admit(f"w{index}", "w", LIMIT)) for index in range(30))
        )
        in_maintenance.extend(len(state.in_maintenance("w")) for state in admitted)
        holders = sorted((await stores[0].refresh()).in_maintenance("w"))
        # A refused decision among others: its caller hears it, the others are written.
        outcomes = await asyncio.gather(
            stores[0].update(release(holders[0])),
            stores[0].update(refuse),
            stores[0].update(release(holders[1])),
            return_exceptions=True,
        )
        assert isinstance(outcomes[1], ValueError), outcomes
        assert all(isinstance(outcome, LockState) for outcome in (outcomes[0], outcomes[2]))
        # The two freed slots go to two of the next six, never more.
        again = await asyncio.gather(
            *(stores[index % 2].update(admit(f"v{index}", "w", LIMIT)) for index in range(6))
        )
        in_maintenance.extend(len(state.in_maintenance("w")) for state in again)
        final = await stores[1].refresh()
        assert not final.nodes.keys() & set(holders[:2])
        return final

    final = asyncio.run(scenario())
    for api in apis:
        api.close()
    assert len(final.in_maintenance("x")) == 40
    assert max(in_maintenance) <= LIMIT and len(final.in_maintenance("w")) == LIMIT
    writes = sum(
        kube.requests.get("update configmaps", 0) + kube.requests.get("create configmaps", 0)
        for kube in kubes
    )
    # One write per update would be 40 for the first round alone.
    print("lock writes:", writes, [kube.requests for kube in kubes])
    assert writes <= 25, [kube.requests for kube in kubes]


def test_a_cancelled_writer_leaves_the_other_updates_to_the_next_write(
    api_client: client.ApiClient, namespace: str
) -> None:
    api = own_client(api_client)
    store = LockStore(Kube(api), namespace, "pitstop-lock")

    async def scenario() -> LockState:
        await store.update(admit("first", "w"))  # the lock exists and is loaded
        deciding = asyncio.Event()
        decide_b = admit("b", "w")

        def decide_and_tell(state: LockState) -> LockState | None:
            deciding.set()
            return decide_b(state)

        holder = asyncio.create_task(store.update(admit("a", "w")))
        await asyncio.sleep(0)  # `holder` writes a alone ...
        writer = asyncio.create_task(store.update(decide_and_tell))
        follower = asyncio.create_task(store.update(admit("c", "w")))
        await holder  # ... then `writer` takes b and c into one write ...
        await deciding.wait()
        writer.cancel()  # ... and is cancelled while that write is under way
        with pytest.raises(asyncio.CancelledError):
            await writer
        state = await follower
        assert {"a", "c"} <= state.nodes.keys()
        return await store.refresh()

    final = asyncio.run(scenario())
    api.close()
    assert {"first", "a", "c"} <= final.nodes.keys()
