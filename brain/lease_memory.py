"""What one brain process remembers about a node in maintenance, keyed so it cannot outlive it.

The lock is the truth and several brains write it. A fact a brain keeps in memory ("I started a
drain", "I saw it NotReady", "I read its Job at...") is only valid for the phase visit it was
learnt in: every phase change written by any brain sets a new `since`, and a new maintenance of
the same node (after a release, a finished reboot or a retry) has a new `since` (and a retry a
new attempt). So each fact is stored under (node, attempt, since): looked up under the lease the
lock shows now, a fact from another phase visit is simply not there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from brain.core.lock_state import NodeLease

T = TypeVar("T")


@dataclass(frozen=True)
class LeaseKey:
    """One visit of one node to one phase: the lease's attempt and its phase start."""

    node: str
    attempt: int
    since: datetime

    @classmethod
    def of(cls, node: str, lease: NodeLease) -> LeaseKey:
        return cls(node, lease.attempt, lease.since)


class LeaseMemory(Generic[T]):
    """At most one fact per node, valid only under the lease key it was stored with."""

    def __init__(self) -> None:
        self._facts: dict[str, tuple[LeaseKey, T]] = {}

    def get(self, key: LeaseKey) -> T | None:
        """The fact stored under exactly this key (None if none, or stored under another)."""
        entry = self._facts.get(key.node)
        return entry[1] if entry is not None and entry[0] == key else None

    def __contains__(self, key: LeaseKey) -> bool:
        entry = self._facts.get(key.node)
        return entry is not None and entry[0] == key

    def put(self, key: LeaseKey, value: T) -> T | None:
        """Remember `value` for this key; returns what was stored under another key, if any."""
        previous = self._facts.get(key.node)
        self._facts[key.node] = (key, value)
        return previous[1] if previous is not None and previous[0] != key else None

    def take_outdated(self, key: LeaseKey) -> T | None:
        """Remove and return the node's fact if it was stored under another key (for clean-up)."""
        entry = self._facts.get(key.node)
        if entry is None or entry[0] == key:
            return None
        del self._facts[key.node]
        return entry[1]

    def pop(self, node: str) -> T | None:
        entry = self._facts.pop(node, None)
        return entry[1] if entry is not None else None

    def values(self) -> list[T]:
        return [value for _, value in self._facts.values()]

    def clear(self) -> None:
        self._facts.clear()
