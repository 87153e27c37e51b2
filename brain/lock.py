"""The lock: one ConfigMap that records every node in maintenance.

It is the source of truth for "who holds a slot": the brain writes each step here before taking
it, so a restarted brain resumes from it. Every change is a read-modify-write guarded by the
ConfigMap's resourceVersion; a 409 means someone else wrote first, so the caller re-reads and
decides again. This module holds the content model (pure) and the ConfigMap I/O.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

from kubernetes.client.exceptions import ApiException
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from brain.kube import Kube
from brain.phase import IN_MAINTENANCE, Phase

log = logging.getLogger("pitstop.lock")
LOCK_DATA_KEY = "state.json"
LOCK_FORMAT_VERSION = 1
COMPLETED_HISTORY_PER_WINDOW = 50


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# A moment in the lock; one written without a zone (by hand) is read as UTC, so comparing it
# with the brain's aware clock never raises (and never breaks the plan of every window).
Moment = Annotated[datetime, AfterValidator(_as_utc)]


class _LockModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class NodeLease(_LockModel):
    """One node in maintenance: everything needed to resume its flow after a crash."""

    window: str
    phase: Phase
    since: Moment
    boot_id_before: str = Field(default="", alias="bootIDBefore")
    was_cordoned: bool = Field(default=False, alias="wasCordoned")
    # When the current phase gives up (drain timeout, node return timeout, health gate timeout).
    deadline: Moment | None = None
    job_name: str = Field(default="", alias="jobName")
    message: str = ""
    emergency: bool = False
    attempt: int = 1
    # Zone (or other topology domain) value at admission, for the per-domain budget.
    domain: str = ""
    # PodDisruptionBudgets (namespace/name) that covered evicted pods: the health gate's list.
    pdbs: list[str] = Field(default_factory=list)
    # WaitingForNode saw the node NotReady (a Ready node with the old boot ID after that did
    # not reboot). Written only by older brains: this one keeps it in memory, and reads it.
    saw_not_ready: bool = Field(default=False, alias="sawNotReady")


class CompletedReboot(_LockModel):
    node: str
    finished: Moment
    result: str  # the Event reason: "Rebooted", "Released", "DrainAborted", "NodeDeleted"
    message: str = ""
    # The node's boot ID when it finished: a node still flagged at this same boot is not
    # rebooted again until its detector flags it anew (no reboot loops).
    boot_id: str = Field(default="", alias="bootID")


class WindowRecord(_LockModel):
    last_finished: Moment | None = Field(default=None, alias="lastFinished")
    completed: list[CompletedReboot] = Field(default_factory=list)
    # The window's spec when its last node was admitted: nodes in flight finish with it even
    # if the window is deleted meanwhile.
    spec: dict[str, Any] | None = None
    # Nodes whose drain was aborted wait until then before they are admitted again.
    retry_after: dict[str, Moment] = Field(default_factory=dict, alias="retryAfter")

    def record(self, completed: CompletedReboot) -> None:
        self.completed.append(completed)
        del self.completed[:-COMPLETED_HISTORY_PER_WINDOW]


class LockState(_LockModel):
    version: int = LOCK_FORMAT_VERSION
    nodes: dict[str, NodeLease] = Field(default_factory=dict)
    windows: dict[str, WindowRecord] = Field(default_factory=dict)

    def in_maintenance(self, window: str | None = None) -> dict[str, NodeLease]:
        """Leases holding a slot, optionally only those of one window."""
        return {
            name: lease
            for name, lease in self.nodes.items()
            if lease.phase in IN_MAINTENANCE and (window is None or lease.window == window)
        }

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_defaults=False)

    @classmethod
    def from_json(cls, text: str | None) -> LockState:
        if not text:
            return cls()
        return cls.model_validate_json(text)


# -- ConfigMap I/O -------------------------------------------------------------------------------

MAX_WRITE_ATTEMPTS = 20


# An unreadable lock is read again after 1 s, then 2, 4 ... at most this long.
UNREADABLE_FIRST_RETRY_SECONDS = 1.0
UNREADABLE_MAX_RETRY_SECONDS = 30.0


class LockConflictError(RuntimeError):
    """The lock kept changing under us; the pass is abandoned and retried later."""


class LockUnreadableError(RuntimeError):
    """The lock's data does not parse. Nothing is decided or written until it does: the data
    may be a person's mistake or a newer brain's format, and overwriting it would free every
    slot it holds."""


class LockRebuild(Protocol):
    """Rebuilds a missing lock's content from what the cluster shows (see brain.lock_rebuild)."""

    async def rebuild(self) -> LockState: ...

    async def rebuilt(self, state: LockState) -> None: ...


def parse_lock_data(text: str | None, where: str) -> LockState:
    """The lock's content, or LockUnreadableError saying in one line what is wrong."""
    try:
        return LockState.from_json(text)
    except ValueError as error:
        lines = str(error).strip().splitlines()
        detail = "; ".join(line.strip() for line in lines[:3])
        raise LockUnreadableError(
            f"lock ConfigMap {where} key {LOCK_DATA_KEY} does not parse: {detail}"
        ) from None


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
                config_map = await self.kube.call(
                    self.kube.core.read_namespaced_config_map, self.name, self.namespace
                )
            except ApiException as error:
                if error.status != 404:
                    raise
                self._readable_again()
                return await self._recreate()
            data = config_map.data or {}
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
            self._resource_version = config_map.metadata.resource_version
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
        config_map = await self.kube.call(
            self.kube.core.read_namespaced_config_map, self.name, self.namespace
        )
        self._state = parse_lock_data((config_map.data or {}).get(LOCK_DATA_KEY), self.where)
        self._resource_version = config_map.metadata.resource_version
        self._loaded = True
        self.synced_at = time.monotonic()
        return self._state.model_copy(deep=True)

    async def read(self) -> LockState:
        """The last state read or written (reads the ConfigMap the first time, and again
        while it is unreadable or was found missing)."""
        if not self._loaded:
            return await self.refresh()
        return self._state.model_copy(deep=True)

    async def update(self, decide: Callable[[LockState], LockState | None]) -> LockState:
        async with self._mutex:
            if not self._loaded:
                await self.refresh()
            for _ in range(MAX_WRITE_ATTEMPTS):
                proposed = decide(self._state.model_copy(deep=True))
                if proposed is None:
                    return self._state.model_copy(deep=True)
                try:
                    await self._write(proposed)
                    return proposed.model_copy(deep=True)
                except ApiException as error:
                    # 409: someone else wrote first; 404: the ConfigMap was deleted (it is
                    # rebuilt from the cluster). Either way: read again, decide again.
                    if error.status not in (404, 409):
                        raise
                    if error.status == 409 and self._on_conflict is not None:
                        self._on_conflict()
                    await self.refresh()
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
            written = await self.kube.call(
                self.kube.core.create_namespaced_config_map, self.namespace, body
            )
        else:
            body["metadata"]["resourceVersion"] = self._resource_version  # type: ignore[index]
            written = await self.kube.call(
                self.kube.core.replace_namespaced_config_map, self.name, self.namespace, body
            )
        self._state = state.model_copy(deep=True)
        self._resource_version = written.metadata.resource_version
        self.synced_at = time.monotonic()
