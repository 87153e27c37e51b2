"""Tell a drain's refused evictions when a PodDisruptionBudget allows a disruption again; and,
shared by the brain's drains and health gates (`SharedBudgets`), stand in for their budget reads.

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

The brain shares one such watch (`SharedBudgets`) between every drain and health gate while they
use it: opened at a drain's start, it serves the budgets covering the evicted pods at the drain's
end and whether they are whole again at the health gate, so a reboot costs no budget read of its
own (one watch request for a whole rollout, where each reboot cost a list and a read). It closes
after a minute unused, so an idle brain keeps no watch open; a view it does not hold complete and
current (just opened, failed once, closed) leaves the reader to the API as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any, Final, Protocol

from kubernetes.client.exceptions import ApiException

from brain.kube import JsonApi
from brain.watch_list import object_watch

log = logging.getLogger(__name__)
# A shared watch nobody used for this long is closed (an idle brain keeps no watch open).
SHARED_IDLE_SECONDS: Final = 60.0
# How long a reader waits for a shared watch just opened to hold every budget, before it asks
# the API itself (a watch-list answers in milliseconds).
SHARED_SETTLE_SECONDS: Final = 1.0


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
        self._stopped = False
        self.forbidden = False  # the brain may not watch budgets (403)
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

    def start(self) -> None:
        """Open the watch now (rather than at the first wait)."""
        self._watch.start()

    @property
    def usable(self) -> bool:
        """Still open and never failed (a watch closed or interrupted may miss a change)."""
        return not self._stopped and not self._watch.interrupted

    def budgets(self) -> list[dict[str, Any]] | None:
        # Only a watch that never failed stands in for a list: one that failed may have missed
        # a change. Read after stop() too: a drain stops its own watch, then reads what it saw.
        if not self._complete or self._watch.interrupted:
            return None
        return list(self._objects.values())

    def view(self) -> dict[str, dict[str, Any]] | None:
        """Every budget by namespace/name as the watch shows it now (None: no complete,
        current view; a budget not in it does not exist)."""
        if not self._complete or not self.usable:
            return None
        return dict(self._objects)

    async def settled(self, at_most_seconds: float) -> dict[str, dict[str, Any]] | None:
        """The view, once the watch holds every budget (None after `at_most_seconds`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + at_most_seconds
        while not self._complete and self.usable:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._pulse.wait(), remaining)
        return self.view()

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
            self.forbidden = True
            self._watch.give_up()

    def _changed(self, name: str, allows: bool) -> None:
        self._sequence += 1
        self._changed_at[name] = self._sequence
        self._allows[name] = allows

    def _wake(self) -> None:
        pulse, self._pulse = self._pulse, asyncio.Event()
        pulse.set()

    async def stop(self) -> None:
        self._stopped = True
        await self._watch.stop()


class SharedBudgets:
    """One budget watch for every drain and health gate of the brain, open while they use it.

    A drain holds it (`acquire`/`release`) from its start to its end; a health gate reads it
    (`view`). Unused for SHARED_IDLE_SECONDS, it is closed; the next user opens a new one. One
    that failed is replaced by the next user once nobody holds it.
    """

    def __init__(self, api: JsonApi, idle_seconds: float = SHARED_IDLE_SECONDS) -> None:
        self._api = api
        self._idle_seconds = idle_seconds
        self._watch: BudgetWatch | None = None
        self._users = 0
        self._last_used = 0.0
        self._idle_check: asyncio.TimerHandle | None = None
        self._stopping: set[asyncio.Task[None]] = set()

    def _current(self) -> BudgetWatch:
        watch = self._watch
        if watch is not None and watch.forbidden:
            return watch  # kept (never usable): asking again would be refused again
        if watch is None or (not watch.usable and self._users == 0):
            if watch is not None:
                self._stop_later(watch)
            watch = self._watch = BudgetWatch(self._api)
            watch.start()
        self._touch()
        return watch

    def acquire(self) -> BudgetWatch:
        """The shared watch (open), held until `release`: a drain's refusals wait on it."""
        watch = self._current()
        self._users += 1
        return watch

    def release(self) -> None:
        self._users = max(self._users - 1, 0)
        self._touch()

    async def view(self) -> dict[str, dict[str, Any]] | None:
        """Every budget by namespace/name, for the health gate (None: read them from the API);
        opens the watch if it is not open, and waits a moment for a new one's state."""
        return await self._current().settled(SHARED_SETTLE_SECONDS)

    def _touch(self) -> None:
        loop = asyncio.get_running_loop()
        self._last_used = loop.time()
        if self._idle_check is None:
            self._idle_check = loop.call_later(self._idle_seconds, self._close_if_idle)

    def _close_if_idle(self) -> None:
        self._idle_check = None
        if self._watch is None or self._watch.forbidden:
            return
        loop = asyncio.get_running_loop()
        unused = loop.time() - self._last_used
        if self._users == 0 and unused >= self._idle_seconds:
            self._stop_later(self._watch)
            self._watch = None
            return
        wait = max(self._idle_seconds - unused, 1.0)
        self._idle_check = loop.call_later(wait, self._close_if_idle)

    def _stop_later(self, watch: BudgetWatch) -> None:
        task = asyncio.get_running_loop().create_task(watch.stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def close(self) -> None:
        if self._idle_check is not None:
            self._idle_check.cancel()
            self._idle_check = None
        watch, self._watch = self._watch, None
        if watch is not None:
            await watch.stop()
        await asyncio.gather(*self._stopping, return_exceptions=True)


def _name_of(budget: Mapping[str, Any]) -> str:
    metadata = budget.get("metadata") or {}
    return f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"
