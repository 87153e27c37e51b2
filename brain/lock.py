"""The lock's ConfigMap: read-modify-write with optimistic concurrency.

Every change is a read-modify-write guarded by the ConfigMap's resourceVersion; a 409 means
someone else wrote first, so the caller re-reads and decides again. What the lock holds is
`brain/core/lock_state.py`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from kubernetes.client.exceptions import ApiException

from brain.core.lock_state import LOCK_DATA_KEY, LockState, LockUnreadableError, parse_lock_data
from brain.kube import Kube

log = logging.getLogger("pitstop.lock")

MAX_WRITE_ATTEMPTS = 20


# An unreadable lock is read again after 1 s, then 2, 4 ... at most this long.
UNREADABLE_FIRST_RETRY_SECONDS = 1.0
UNREADABLE_MAX_RETRY_SECONDS = 30.0


class LockConflictError(RuntimeError):
    """The lock kept changing under us; the pass is abandoned and retried later."""


class LockRebuild(Protocol):
    """Rebuilds a missing lock's content from what the cluster shows (see brain.lock_rebuild)."""

    async def rebuild(self) -> LockState: ...

    async def rebuilt(self, state: LockState) -> None: ...


@dataclass(frozen=True)
class _Update:
    """One caller's change, waiting to be written with the others asked meanwhile."""

    decide: Callable[[LockState], LockState | None]
    done: asyncio.Future[LockState]


class LockStore:
    """Reads and writes the lock ConfigMap with optimistic concurrency.

    `update(decide)` hands `decide` the freshest state it has; `decide` returns the new state,
    or None to write nothing. A 409 (someone else wrote first) re-reads the ConfigMap and calls
    `decide` again on what it finds, so every decision is made on the state it is written over.
    """

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        on_conflict: Callable[[], None] | None = None,
        rebuild: LockRebuild | None = None,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self._on_conflict = on_conflict
        self._rebuild = rebuild
        self._state = LockState()
        self._resource_version: str | None = None
        self._loaded = False
        self._mutex = asyncio.Lock()
        self._queued: list[_Update] = []  # updates waiting for the next write
        self._reading = asyncio.Lock()
        # While the lock is unreadable: why, the current back-off, and when to read again.
        self.unreadable: str | None = None
        self._backoff = 0.0
        self._retry_at = 0.0
        # time.monotonic() of the last read or write that showed the ConfigMap as it was.
        self.synced_at = float("-inf")

    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/configmaps/{self.name}"

    @property
    def version(self) -> str | None:
        """The ConfigMap's resourceVersion as last read or written: a pass that sees it unchanged
        knows the lock is as it planned on."""
        return self._resource_version

    def seconds_until_retry(self) -> float:
        """While unreadable: how long until the ConfigMap is read again."""
        return max(0.0, self._retry_at - time.monotonic())

    async def refresh(self) -> LockState:
        """Read the ConfigMap. A missing one is rebuilt from the cluster (when a rebuild is
        given; else it is an empty lock); an unreadable one raises LockUnreadableError, and is
        read again only after a back-off (1 s, doubling, at most 30 s)."""
        async with self._reading:
            if self.unreadable is not None and time.monotonic() < self._retry_at:
                raise LockUnreadableError(self.unreadable)
            try:
                config_map = await self.kube.get(self.path)
            except ApiException as error:
                if error.status != 404:
                    raise
                self._readable_again()
                return await self._recreate()
            data = config_map.get("data") or {}
            try:
                state = parse_lock_data(data.get(LOCK_DATA_KEY), self.where)
            except LockUnreadableError as error:
                self._loaded = False
                self._backoff = min(
                    max(self._backoff * 2, UNREADABLE_FIRST_RETRY_SECONDS),
                    UNREADABLE_MAX_RETRY_SECONDS,
                )
                self._retry_at = time.monotonic() + self._backoff
                self.unreadable = str(error)
                log.warning(
                    "%s; nothing is decided or written; read again in %.0f s",
                    error,
                    self._backoff,
                )
                raise
            self._readable_again()
            self._state = state
            self._resource_version = config_map["metadata"]["resourceVersion"]
            self._loaded = True
            self.synced_at = time.monotonic()
            return self._state.model_copy(deep=True)

    def _readable_again(self) -> None:
        if self.unreadable is not None:
            log.warning("lock ConfigMap %s is readable again", self.where)
        self.unreadable, self._backoff, self._retry_at = None, 0.0, 0.0

    async def _recreate(self) -> LockState:
        """The ConfigMap is missing: rebuild what it held from the cluster, in one create.

        Nothing rebuilt (a new installation) writes nothing: the lock is created by the first
        admission. A 409 means another brain re-created it first: read theirs.
        """
        # Until the rebuilt content is known, nothing may be decided on an empty lock: a
        # failure below leaves the store unloaded, and the next read tries again.
        self._state, self._resource_version, self._loaded = LockState(), None, False
        rebuild = self._rebuild
        state = await rebuild.rebuild() if rebuild is not None else LockState()
        if rebuild is None or not state.nodes:
            self._loaded = True
            return self._state.model_copy(deep=True)
        try:
            await self._write(state)
        except ApiException as error:
            if error.status != 409:
                raise
            return await self._read_after_conflict()
        self._loaded = True
        await rebuild.rebuilt(state)
        return self._state.model_copy(deep=True)

    async def _read_after_conflict(self) -> LockState:
        config_map = await self.kube.get(self.path)
        self._state = parse_lock_data((config_map.get("data") or {}).get(LOCK_DATA_KEY), self.where)
        self._resource_version = config_map["metadata"]["resourceVersion"]
        self._loaded = True
        self.synced_at = time.monotonic()
        return self._state.model_copy(deep=True)

    def holds(self, node: str) -> bool:
        """Whether the lock, as last read or written, has a lease for `node` (no request)."""
        return node in self._state.nodes

    async def read(self) -> LockState:
        """The last state read or written (reads the ConfigMap the first time, and again
        while it is unreadable or was found missing)."""
        if not self._loaded:
            return await self.refresh()
        return self._state.model_copy(deep=True)

    async def update(self, decide: Callable[[LockState], LockState | None]) -> LockState:
        """Apply `decide` to the lock and return the state written (or, for None, as it is).

        Updates asked for while a write is under way are written together, in the order asked,
        by the next write (group commit): each `decide` sees the state its predecessors made,
        as it would one write after another, and each caller returns only once the one write
        carrying its change is in. At 100 nodes in maintenance the lock is written a dozen
        times a second; one write at a time made every step wait for the writes before it.
        """
        waiting = _Update(decide, asyncio.get_running_loop().create_future())
        self._queued.append(waiting)
        try:
            async with self._mutex:
                if not waiting.done.done():
                    await self._write_queued(waiting)
        except asyncio.CancelledError:
            if waiting in self._queued:  # not taken by a write yet: withdrawn
                self._queued.remove(waiting)
            raise
        return waiting.done.result()

    async def _write_queued(self, own: _Update) -> None:
        batch, self._queued = self._queued, []
        try:
            await self._write_batch(batch)
        except asyncio.CancelledError:
            # The writer's own task was cancelled: the others' updates are not lost, the
            # next of them to hold the mutex writes them (decided again on what it reads).
            self._queued[:0] = [u for u in batch if u is not own and not u.done.done()]
            raise
        except BaseException as error:
            for update in batch:
                if not update.done.done():
                    update.done.set_exception(error)

    async def _write_batch(self, batch: list[_Update]) -> None:
        if not self._loaded:
            await self.refresh()
        for _ in range(MAX_WRITE_ATTEMPTS):
            state = self._state.model_copy(deep=True)
            refusals: dict[int, Exception] = {}
            changed = False
            for index, update in enumerate(batch):
                try:
                    proposed = update.decide(state.model_copy(deep=True))
                except Exception as error:  # this caller's own: the others' changes go on
                    refusals[index] = error
                    continue
                if proposed is not None:
                    state, changed = proposed, True
            if changed:
                try:
                    await self._write(state)
                except ApiException as error:
                    # 409: someone else wrote first; 404: the ConfigMap was deleted (it is
                    # rebuilt from the cluster). Either way: read again, decide again.
                    if error.status not in (404, 409):
                        raise
                    if error.status == 409 and self._on_conflict is not None:
                        self._on_conflict()
                    await self.refresh()
                    continue
            for index, update in enumerate(batch):
                if index in refusals:
                    update.done.set_exception(refusals[index])
                else:
                    update.done.set_result(state.model_copy(deep=True))
            return
        raise LockConflictError(
            f"lock {self.namespace}/{self.name} changed {MAX_WRITE_ATTEMPTS} times in a row"
        )

    async def _write(self, state: LockState) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "pitstop"},
            },
            "data": {LOCK_DATA_KEY: state.to_json()},
        }
        if self._resource_version is None:
            # The lock is created lazily; a 409 here means another brain created it first.
            written = await self.kube.create(
                f"/api/v1/namespaces/{self.namespace}/configmaps", body
            )
        else:
            body["metadata"]["resourceVersion"] = self._resource_version  # type: ignore[index]
            written = await self.kube.replace(self.path, body)
        self._state = state.model_copy(deep=True)
        self._resource_version = written["metadata"]["resourceVersion"]
        self.synced_at = time.monotonic()
