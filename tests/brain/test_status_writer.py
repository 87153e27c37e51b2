"""The status writer election: its pure decisions, and two brains on one in-memory Lease."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from brain.status_writer import (
    LEASE_SECONDS,
    RENEW_SECONDS,
    Action,
    LeaseRecord,
    StatusWriter,
    next_action,
    seconds_until_next_look,
)


def test_no_lease_is_created_ours_is_renewed_a_free_one_is_taken() -> None:
    assert next_action(None, "a", 0, 15) == Action.CREATE
    assert next_action(LeaseRecord("a", "7"), "a", 100, 15) == Action.RENEW
    assert next_action(LeaseRecord("", "7"), "a", 0, 15) == Action.ACQUIRE


def test_another_holders_lease_is_taken_only_once_unchanged_for_the_whole_duration() -> None:
    held = LeaseRecord("b", "7")
    assert next_action(held, "a", 14.9, 15) == Action.FOLLOW
    assert next_action(held, "a", 15.0, 15) == Action.ACQUIRE


def test_a_follower_looks_again_when_the_holders_lease_would_expire() -> None:
    assert seconds_until_next_look(Action.FOLLOW, 0, 15, 5) == 5
    assert seconds_until_next_look(Action.FOLLOW, 13, 15, 5) == pytest.approx(2)
    assert seconds_until_next_look(Action.RENEW, 13, 15, 5) == 5


class FakeLeases:
    """One Lease with resourceVersion semantics, as the API server keeps it."""

    def __init__(self) -> None:
        self.spec: dict[str, Any] | None = None
        self.version = 0
        self.reachable: set[str] = set()
        self.writes = 0
        self.reads = 0
        self.refused = 0  # 409s

    @property
    def requests(self) -> int:
        return self.writes + self.reads + self.refused

    def read(self) -> Any:
        self.reads += 1
        if self.spec is None:
            raise ApiException(status=404)
        return {"metadata": {"resourceVersion": str(self.version)}, "spec": dict(self.spec)}

    def create(self, body: dict[str, Any]) -> Any:
        if self.spec is not None:
            self.refused += 1
            raise ApiException(status=409)
        return self._store(body)

    def replace(self, body: dict[str, Any]) -> Any:
        if self.spec is None:
            self.refused += 1
            raise ApiException(status=404)
        if body["metadata"]["resourceVersion"] != str(self.version):
            self.refused += 1
            raise ApiException(status=409)
        return self._store(body)

    def _store(self, body: dict[str, Any]) -> Any:
        self.spec, self.version = body["spec"], self.version + 1
        self.writes += 1
        return {"metadata": {"resourceVersion": str(self.version)}, "spec": dict(body["spec"])}


class FakeKube:
    """The brain's Kube, by path, on the modelled Lease API (one Lease)."""

    def __init__(self, leases: FakeLeases, name: str) -> None:
        self.leases = leases
        self.name = name
        self.reads = 0

    def _reach(self) -> None:
        if self.name not in self.leases.reachable:  # a dead brain reaches nothing
            raise ApiException(status=0, reason="dead")

    async def get(self, path: str) -> Any:
        self._reach()
        self.reads += 1
        return self.leases.read()

    async def create(self, path: str, body: dict[str, Any]) -> Any:
        self._reach()
        return self.leases.create(body)

    async def replace(self, path: str, body: dict[str, Any]) -> Any:
        self._reach()
        return self.leases.replace(body)


class Model:
    """Two brains on one Lease, a shared model time, and each brain's own monotonic clock
    (different origins: nothing may compare them). The window shows one status; the world
    changes it at given moments; each brain sees a change of the world and of the window after
    its own lag, and wants to write while what it computes differs from what it sees the window
    show, as the reconciler does (a follower does not write what the holder wrote)."""

    TICK = 0.1

    def __init__(self, lags: dict[str, float]) -> None:
        self.leases = FakeLeases()
        self.leases.reachable = set(lags)
        self.time = 0.0
        self.lags = lags
        self.writers = {
            name: StatusWriter(
                FakeKube(self.leases, name),  # type: ignore[arg-type]
                "ns",
                identity=name,
                monotonic=lambda offset=1000.0 * index: self.time + offset,
            )
            for index, name in enumerate(lags)
        }
        self.changes: list[tuple[float, int]] = [(0.0, 1)]  # (when, the status it makes)
        self.shown_history: list[tuple[float, int]] = [(0.0, 0)]
        self.written: list[tuple[float, str]] = []
        self.alive = set(lags)

    def change_at(self, when: float) -> None:
        self.changes.append((when, self.changes[-1][1] + 1))

    @property
    def shown(self) -> int:
        return self.shown_history[-1][1]

    def seen_by(self, name: str, history: list[tuple[float, int]]) -> int:
        seen = [status for when, status in history if when + self.lags[name] <= self.time]
        return seen[-1] if seen else 0

    def holders(self) -> list[str]:
        return [name for name, writer in self.writers.items() if writer.is_writer]

    def kill(self, name: str) -> None:
        """SIGKILL (or a partition): it reaches the API no more and writes no more. Its hold
        is still counted: a paused process could write until it ends."""
        self.alive.discard(name)
        self.leases.reachable.discard(name)

    async def run_until(self, end: float) -> None:
        while self.time < end:
            self.time = round(self.time + self.TICK, 6)
            for name in sorted(self.alive, key=lambda _: random.random()):
                seen = self.seen_by(name, self.changes)
                shown = self.seen_by(name, self.shown_history)
                if seen != shown and await self.writers[name].may_write():
                    assert self.writers[name].is_writer
                    self.shown_history.append((self.time, seen))
                    self.written.append((self.time, name))
            holders = self.holders()
            assert len(holders) <= 1, f"two writers at {self.time:.1f} s: {holders}"


@pytest.mark.parametrize("seed", range(20))
def test_two_brains_never_write_at_once_and_the_survivor_takes_over_within_the_lease(
    seed: int,
) -> None:
    chance = random.Random(seed)
    random.seed(seed)
    model = Model({"a": chance.uniform(0, 1.5), "b": chance.uniform(0, 1.5)})
    moment = 0.0
    while moment < 200:  # status changes at random moments: bursts and long quiet stretches
        moment += chance.choice([0.3, 1.0, 4.0, 9.0, 20.0, 40.0]) * chance.random()
        model.change_at(moment)

    async def run() -> None:
        await model.run_until(chance.uniform(40, 100))
        victim = chance.choice(["a", "b"])
        survivor = "b" if victim == "a" else "a"
        model.kill(victim)
        killed_at = model.time
        wants_from = min(
            when + model.lags[survivor] for when, status in model.changes if when > killed_at
        )
        await model.run_until(400)
        took_over = min(when for when, name in model.written if when > killed_at)
        # The survivor reads the Lease within one renew period of wanting to write, and takes
        # it once it saw the record unchanged for the lease duration.
        assert took_over - wants_from <= LEASE_SECONDS + RENEW_SECONDS + 0.2
        assert all(name == survivor for when, name in model.written if when > killed_at)

    asyncio.run(run())
    assert model.shown == model.changes[-1][1]  # every change ended up written


def test_an_idle_brain_sends_no_request_and_a_burst_costs_few() -> None:
    model = Model({"a": 0.0, "b": 0.5})

    async def run() -> None:
        await model.run_until(1)
        assert model.written and model.written[0][1] == "a"
        # a created the Lease (a read, a create); b saw the change a moment before it saw a's
        # write, read the Lease once and followed, then saw the write: no more requests.
        assert (model.leases.reads, model.leases.writes) == (2, 1)
        before = model.leases.requests
        await model.run_until(600)  # ten minutes with nothing to write
        assert model.leases.requests == before
        assert model.holders() == []  # the hold lapsed (no renewal on a timer) ...
        assert model.writers["a"].holds_lease  # ... but the Lease still names a
        # A burst of changes within a few seconds: one renewal, on a's own last write.
        for offset in (0.5, 0.8, 1.5, 2.0, 3.0):
            model.change_at(600 + offset)
        await model.run_until(604)
        assert model.leases.requests == before + 1
        assert [name for _, name in model.written[1:]] == ["a"] * 5
        # A long busy stretch: about one renewal per renew period, whatever the writes.
        before = model.leases.requests
        for step in range(300):
            model.change_at(604 + step * 0.2)
        await model.run_until(665)
        assert model.leases.requests <= before + 60 / RENEW_SECONDS + 3
        assert model.writers["a"].kube.reads == 1  # a renews on its own writes, unread

    asyncio.run(run())


def test_a_follower_that_wants_to_write_reads_at_most_every_renew_period() -> None:
    model = Model({"a": 0.0, "b": 0.0})

    async def run() -> None:
        await model.run_until(1)
        holder = model.written[0][1]
        follower = "b" if holder == "a" else "a"
        # The holder hangs (alive, reaching the API, but writing nothing): the follower sees
        # status to write and asks on every pass; it reads every renew period, and takes
        # the Lease once the record did not change for the lease duration.
        model.alive.discard(holder)
        model.change_at(2)
        await model.run_until(40)
        took_over = next(when for when, name in model.written if name == follower)
        assert 2 + LEASE_SECONDS - 0.2 <= took_over <= 2 + LEASE_SECONDS + RENEW_SECONDS + 0.2
        assert model.leases.reads <= 1 + (took_over - 2) / RENEW_SECONDS + 2
        # The old holder comes back with something to write: its renewal on its own last
        # write is refused (409), it reads, and follows.
        model.alive.add(holder)
        writer = model.writers[holder]
        assert not await writer.may_write()
        assert not writer.holds_lease and model.writers[follower].holds_lease

    asyncio.run(run())


def test_a_clean_stop_hands_the_lease_back_and_the_other_takes_it_at_once() -> None:
    model = Model({"a": 0.0, "b": 0.0})

    async def run() -> None:
        await model.run_until(1)
        holder = model.written[0][1]
        other = "b" if holder == "a" else "a"
        before = model.leases.requests
        await model.writers[holder].release()
        assert model.leases.requests == before + 1
        model.kill(holder)
        model.change_at(1.5)
        await model.run_until(2)
        assert model.written[-1][1] == other

    asyncio.run(run())
