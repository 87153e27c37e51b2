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
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException

from brain.drain.watch_stream import (
    INITIAL_EVENTS_END_ANNOTATION,
    close_response,
    response_lines,
    stop_watch_thread,
)

log = logging.getLogger(__name__)

# A watch ends server-side after this long and is resumed from its last resourceVersion.
WATCH_SECONDS = 300
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0
# The bookmark that ends a watch-list's initial state (sendInitialEvents).


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
    """A watch on PodDisruptionBudgets, read in a thread, opened by the first wait.

    Each event the watch delivers is a change with a sequence number; `allowed_since` wakes as
    soon as the budget's latest change came after the caller's `mark` and allows a disruption.
    A deleted budget allows everything. stop() shuts the socket so no thread is left behind.
    """

    def __init__(self, policy: Any, counter: Any = None) -> None:
        self._policy = policy  # a PolicyV1Api
        self._counter = counter  # a drain.RequestCounter
        self._sequence = 0
        self._changed_at: dict[str, int] = {}  # budget -> sequence of its latest change
        self._allows: dict[str, bool] = {}
        self._objects: dict[str, dict[str, Any]] = {}  # budget -> its latest version
        # The watch has delivered every budget and missed no change since (a watch-list that
        # never failed): `budgets()` may stand in for a list.
        self._complete = False
        self._gapless = True
        self._watch_list = True  # False once the server refused sendInitialEvents
        self._pulse = asyncio.Event()  # set (and replaced) at every change
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._response: Any = None
        self._resource_version = ""

    def mark(self) -> int:
        return self._sequence

    def budgets(self) -> list[dict[str, Any]] | None:
        return list(self._objects.values()) if self._complete and self._gapless else None

    async def allowed_since(self, budget: str, mark: int, at_most_seconds: float) -> bool:
        self._start()
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

    def _start(self) -> None:
        if self._thread is not None or self._stopping.is_set():
            return
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="pitstop-drain-pdbs", daemon=True)
        self._thread.start()

    def _seen(self, kind: str, budget: Mapping[str, Any]) -> None:  # on the event loop
        metadata = budget.get("metadata") or {}
        name = f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"
        self._sequence += 1
        self._changed_at[name] = self._sequence
        self._allows[name] = kind == "DELETED" or allows_disruption(budget)
        if kind == "DELETED":
            self._objects.pop(name, None)
        else:
            self._objects[name] = dict(budget)
        pulse, self._pulse = self._pulse, asyncio.Event()
        pulse.set()

    def _initial_state_ended(self) -> None:  # on the event loop
        self._complete = True

    def _deliver(self, handler: Callable[..., None], *arguments: Any) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
                self._loop.call_soon_threadsafe(handler, *arguments)

    def _run(self) -> None:
        backoff = BACKOFF_FIRST_SECONDS
        while not self._stopping.is_set():
            try:
                self._watch_once()
                backoff = BACKOFF_FIRST_SECONDS
            except Exception as error:
                if self._stopping.is_set():
                    return
                self._gapless = False  # changes may be missed until the watch resumes
                if (
                    isinstance(error, ApiException)
                    and error.status in (400, 422)
                    and not self._resource_version
                    and self._watch_list
                ):
                    self._watch_list = False  # no watch-lists here: a plain watch will do
                    continue
                if isinstance(error, ApiException) and error.status == 403:
                    log.warning("may not watch PodDisruptionBudgets: refused pods wait the pace")
                    return
                if isinstance(error, ApiException) and error.status == 410:
                    self._resource_version = ""  # start anew from the current state
                    continue
                log.warning("watching PodDisruptionBudgets failed: %s", error)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)

    def _watch_once(self) -> None:
        if self._counter is not None:
            self._counter.add("watch-pdbs")
        since: dict[str, Any] = {}
        if self._resource_version:
            since = {"resource_version": self._resource_version}
        elif self._watch_list:
            since = {"send_initial_events": True, "resource_version_match": "NotOlderThan"}
        response = self._policy.list_pod_disruption_budget_for_all_namespaces(
            watch=True,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _preload_content=False,
            **since,
        )
        self._response = response
        try:
            if self._stopping.is_set():
                return
            for line in response_lines(response):
                if not line:
                    continue
                event = json.loads(line)
                kind, budget = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    code = budget.get("code")
                    raise ApiException(status=code, reason=str(budget.get("message", budget)))
                metadata = budget.get("metadata") or {}
                if metadata.get("resourceVersion"):
                    self._resource_version = metadata["resourceVersion"]
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._deliver(self._seen, kind, budget)
                elif kind == "BOOKMARK" and INITIAL_EVENTS_END_ANNOTATION in (
                    metadata.get("annotations") or {}
                ):
                    self._deliver(self._initial_state_ended)
        finally:
            self._response = None
            close_response(response)

    async def stop(self) -> None:
        await stop_watch_thread(self._stopping, self._response, self._thread)
