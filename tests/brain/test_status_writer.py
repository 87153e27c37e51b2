"""The status writer election: its pure decisions, and two brains on one in-memory Lease."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from brain.status_writer import (
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
        self.requests = 0  # writes
        self.reads = 0

    def read_namespaced_lease(self, name: str, namespace: str) -> Any:
        self.reads += 1
        if self.spec is None:
            raise ApiException(status=404)
        return {"metadata": {"resourceVersion": str(self.version)}, "spec": dict(self.spec)}

    def create_namespaced_lease(self, namespace: str, body: dict[str, Any]) -> Any:
        if self.spec is not None:
            raise ApiException(status=409)
        return self._store(body)

    def replace_namespaced_lease(self, name: str, namespace: str, body: dict[str, Any]) -> Any:
        if body["metadata"]["resourceVersion"] != str(self.version):
            raise ApiException(status=409)
        return self._store(body)

    def _store(self, body: dict[str, Any]) -> Any:
        self.spec, self.version = body["spec"], self.version + 1
        self.requests += 1
        return {"metadata": {"resourceVersion": str(self.version)}, "spec": dict(body["spec"])}


class FakeKube:
    """The brain's Kube, by path, on the modelled Lease API (one Lease in namespace `ns`)."""

    def __init__(self, leases: FakeLeases, name: str) -> None:
        self.leases = leases
        self.name = name

    def _reach(self) -> None:
        if self.name not in self.leases.reachable:  # a dead brain reaches nothing
            raise ApiException(status=0, reason="dead")

    async def get(self, path: str) -> Any:
        self._reach()
        return self.leases.read_namespaced_lease(path.rsplit("/", 1)[1], "ns")

    async def create(self, path: str, body: dict[str, Any]) -> Any:
        self._reach()
        return self.leases.create_namespaced_lease("ns", body)

    async def replace(self, path: str, body: dict[str, Any]) -> Any:
        self._reach()
        return self.leases.replace_namespaced_lease(path.rsplit("/", 1)[1], "ns", body)


def test_two_brains_never_write_at_once_and_the_survivor_takes_over_within_the_lease() -> None:
    leases = FakeLeases()
    clock = [0.0]
    writers = {
        name: StatusWriter(
            FakeKube(leases, name),  # type: ignore[arg-type]
            "ns",
            identity=name,
            monotonic=lambda: clock[0],
        )
        for name in ("a", "b")
    }
    leases.reachable = {"a", "b"}
    next_look = dict.fromkeys(writers, 0.0)
    killed_at: float | None = None
    took_over_at: float | None = None

    async def run() -> None:
        nonlocal killed_at, took_over_at
        for tick in itertools.count():
            clock[0] = tick * 0.1
            for name, writer in writers.items():
                if clock[0] >= next_look[name] and name in leases.reachable:
                    try:
                        next_look[name] = clock[0] + await writer.step()
                    except ApiException:
                        next_look[name] = clock[0] + 5
            holders = [name for name, writer in writers.items() if writer.is_writer]
            assert len(holders) <= 1, f"two writers at {clock[0]:.1f} s"
            if killed_at is None and clock[0] >= 30 and holders:
                killed_at = clock[0]
                leases.reachable.discard(holders[0])  # SIGKILL: it renews no more ...
                dead = writers[holders[0]]
                dead._held_until = min(dead._held_until, clock[0])  # ... and writes no more
            if killed_at is not None and holders:
                took_over_at = clock[0]
                return
            if clock[0] > 120:
                return

    asyncio.run(run())
    assert killed_at is not None and took_over_at is not None
    # The last renewal was at most 5 s before the kill; the survivor saw it at most 5 s later.
    assert took_over_at - killed_at <= 15 + 5 + 0.2
    # Periodic, not per reboot: about one write by the holder and one read by the follower
    # every 5 s (the holder renews on its own last write, without reading).
    assert leases.requests <= took_over_at / 5 + 3
    assert leases.reads <= took_over_at / 5 * 1.2 + 6
