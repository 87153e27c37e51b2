"""What a brain remembers of a node is valid only for the lease (phase visit) it was learnt in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from brain.core.lock_state import LockState, NodeLease
from brain.core.phase import Phase
from brain.lease_memory import LeaseKey, LeaseMemory

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def lease(since: datetime, attempt: int = 1, phase: Phase = Phase.DRAINING) -> NodeLease:
    return NodeLease(window="w", phase=phase, since=since, attempt=attempt)


def test_a_fact_of_a_finished_maintenance_is_not_seen_by_the_next_one_at_the_same_attempt() -> None:
    # The failure found by fault testing: "I cordoned (node, attempt 1)" outlived the node's
    # maintenance (another brain finished it), and the next maintenance, attempt 1 again,
    # skipped its cordon. Keyed by the phase start, the next maintenance sees nothing.
    cordoned: LeaseMemory[bool] = LeaseMemory()
    first = LeaseKey.of("n1", lease(T0))
    cordoned.put(first, True)
    assert first in cordoned and cordoned.get(first) is True
    next_rollout = LeaseKey.of("n1", lease(T0 + timedelta(minutes=5)))
    assert next_rollout not in cordoned
    assert cordoned.get(next_rollout) is None


def test_another_brains_phase_change_or_a_retry_voids_the_fact() -> None:
    memory: LeaseMemory[str] = LeaseMemory()
    draining = LeaseKey.of("n1", lease(T0))
    memory.put(draining, "drain task")
    moved_on = LeaseKey.of("n1", lease(T0 + timedelta(seconds=1), phase=Phase.REBOOTING))
    retried = LeaseKey.of("n1", lease(T0, attempt=2))
    assert memory.get(moved_on) is None and memory.get(retried) is None
    # The outdated fact can be taken out once (to cancel a drain task, say), and only once.
    assert memory.take_outdated(draining) is None
    assert memory.take_outdated(moved_on) == "drain task"
    assert memory.take_outdated(moved_on) is None
    assert memory.get(draining) is None


def test_a_key_read_back_from_the_lock_matches_the_one_it_was_stored_with() -> None:
    # The lock is JSON: a phase start read back (another brain's copy, after a 409) is the
    # same key, so a brain keeps its facts across its own re-reads.
    state = LockState(nodes={"n1": lease(datetime(2026, 11, 30, 8, 0, 0, 123456, tzinfo=UTC))})
    again = LockState.from_json(state.to_json())
    memory: LeaseMemory[bool] = LeaseMemory()
    memory.put(LeaseKey.of("n1", state.nodes["n1"]), True)
    assert LeaseKey.of("n1", again.nodes["n1"]) in memory
    assert memory.values() == [True]
    assert memory.pop("n1") is True and memory.pop("n1") is None
