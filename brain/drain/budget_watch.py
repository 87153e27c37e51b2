"""Tell a drain's refused evictions when a PodDisruptionBudget allows a disruption again.

Why: a budget refuses an eviction (429) while its pods' replacements start, often for only a
second or so; retrying at the fixed pace (kubectl's 5 s) wastes most of that pace on every node.
The disruption controller writes the budget's status as soon as it changes, so a watch sees the
moment it allows a disruption again (`status.disruptionsAllowed > 0` for the budget's current
generation) and the refused pod is retried then, once per such change, never more often.

One watch per drain, opened at its first refusal (a drain nothing refuses costs nothing), over
all namespaces so a drain refused in several namespaces still costs one request. It is a
watch-list (the budgets first, then their changes), so it also serves the drain the budgets it
would otherwise list at its end: a refused drain costs no more requests than before. Its state
is only ever used to wake a waiter earlier than the fixed pace would: if the watch fails (or the
brain may not watch budgets), refused pods are retried at the fixed pace as before, and the
drain lists the budgets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException

from brain.kube import JsonApi
from brain.watch_list import object_watch

log = logging.getLogger(__name__)


class BudgetSignals(Protocol):
    """What a refused eviction waits on (a BudgetWatch, or a fake in tests)."""

    def mark(self) -> int:
        """A point in the budgets' history: taken before an eviction is sent."""
        ...

    async def allowed_since(self, budget: str, mark: int, at_most_seconds: float) -> bool:
        """Wait until `budget` (namespace/name) changed after `mark` and allows a disruption;
        False after `at_most_seconds` without such a change."""
        ...

    def budgets(self) -> list[dict[str, Any]] | None:
        """Every budget as the watch shows it now, or None if it has no complete view."""
        ...

    async def stop(self) -> None: ...


def allows_disruption(budget: Mapping[str, Any]) -> bool:
    """Does this version of a budget allow one more eviction (as far as its status is current)?"""
    status = budget.get("status") or {}
    generation = (budget.get("metadata") or {}).get("generation", 0)
    current = status.get("observedGeneration", 0) >= generation
    return bool(current and (status.get("disruptionsAllowed") or 0) > 0)


class BudgetWatch:
    """A watch on PodDisruptionBudgets (the brain's watch client), opened by the first wait.

    Each change the watch delivers gets a sequence number; `allowed_since` wakes as soon as the
    budget's latest change came after the caller's `mark` and allows a disruption. A deleted
    budget allows everything. stop() shuts the socket so no thread is left behind.
    """

    def __init__(self, api: JsonApi) -> None:
        self._sequence = 0
        self._changed_at: dict[str, int] = {}  # budget -> sequence of its latest change
        self._allows: dict[str, bool] = {}
        self._objects: dict[str, dict[str, Any]] = {}  # budget -> its latest version
        self._complete = False  # the watch has delivered every budget
        self._pulse = asyncio.Event()  # set (and replaced) at every change
        self._watch = object_watch(
            api,
            "/apis/policy/v1/poddisruptionbudgets",
            self,
            what="PodDisruptionBudgets",
            thread_name="pitstop-drain-pdbs",
        )

    def mark(self) -> int:
        return self._sequence

    def budgets(self) -> list[dict[str, Any]] | None:
        # Only a watch that never failed stands in for a list: one that failed may have missed
        # a change.
        if not self._complete or self._watch.interrupted:
            return None
        return list(self._objects.values())

    async def allowed_since(self, budget: str, mark: int, at_most_seconds: float) -> bool:
        self._watch.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + at_most_seconds
        while not (self._changed_at.get(budget, 0) > mark and self._allows.get(budget, False)):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._pulse.wait(), remaining)
            except TimeoutError:
                return False
        return True

    def on_state(self, objects: list[dict[str, Any]]) -> None:
        before, self._objects = (
            self._objects,
            {_name_of(budget): dict(budget) for budget in objects},
        )
        for name in before.keys() - self._objects.keys():  # deleted while the watch was away
            self._changed(name, allows=True)
        for name, budget in self._objects.items():
            self._changed(name, allows_disruption(budget))
        self._complete = True
        self._wake()

    def on_change(self, kind: str, item: dict[str, Any]) -> None:
        name = _name_of(item)
        self._changed(name, kind == "DELETED" or allows_disruption(item))
        if kind == "DELETED":
            self._objects.pop(name, None)
        else:
            self._objects[name] = dict(item)
        self._wake()

    def on_failure(self, error: Exception, has_state: bool) -> None:
        if isinstance(error, ApiException) and error.status == 403:
            log.warning("may not watch PodDisruptionBudgets: refused pods wait the pace")
            self._watch.give_up()

    def _changed(self, name: str, allows: bool) -> None:
        self._sequence += 1
        self._changed_at[name] = self._sequence
        self._allows[name] = allows

    def _wake(self) -> None:
        pulse, self._pulse = self._pulse, asyncio.Event()
        pulse.set()

    async def stop(self) -> None:
        await self._watch.stop()


def _name_of(budget: Mapping[str, Any]) -> str:
    metadata = budget.get("metadata") or {}
    return f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"
