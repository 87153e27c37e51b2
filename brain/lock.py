"""The lock: one ConfigMap that records every node in maintenance.

It is the source of truth for "who holds a slot": the brain writes each step here before taking
it, so a restarted brain resumes from it. Every change is a read-modify-write guarded by the
ConfigMap's resourceVersion; a 409 means someone else wrote first, so the caller re-reads and
decides again. This module holds the content model (pure) and the ConfigMap I/O.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ConfigDict, Field

from brain.kube import Kube
from brain.phase import IN_MAINTENANCE, Phase

LOCK_DATA_KEY = "state.json"
LOCK_FORMAT_VERSION = 1
COMPLETED_HISTORY_PER_WINDOW = 50


class _LockModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class NodeLease(_LockModel):
    """One node in maintenance: everything needed to resume its flow after a crash."""

    window: str
    phase: Phase
    since: datetime
    boot_id_before: str = Field(default="", alias="bootIDBefore")
    was_cordoned: bool = Field(default=False, alias="wasCordoned")
    # When the current phase gives up (drain timeout, node return timeout, health gate timeout).
    deadline: datetime | None = None
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
    finished: datetime
    result: str  # the Event reason: "Rebooted", "Released", "DrainAborted", "NodeDeleted"
    message: str = ""
    # The node's boot ID when it finished: a node still flagged at this same boot is not
    # rebooted again until its detector flags it anew (no reboot loops).
    boot_id: str = Field(default="", alias="bootID")


class WindowRecord(_LockModel):
    last_finished: datetime | None = Field(default=None, alias="lastFinished")
    completed: list[CompletedReboot] = Field(default_factory=list)
    # The window's spec when its last node was admitted: nodes in flight finish with it even
    # if the window is deleted meanwhile.
    spec: dict[str, Any] | None = None
    # Nodes whose drain was aborted wait until then before they are admitted again.
    retry_after: dict[str, datetime] = Field(default_factory=dict, alias="retryAfter")

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


class LockConflictError(RuntimeError):
    """The lock kept changing under us; the pass is abandoned and retried later."""


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
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self._on_conflict = on_conflict
        self._state = LockState()
        self._resource_version: str | None = None
        self._loaded = False
        self._mutex = asyncio.Lock()
        # time.monotonic() of the last read or write that showed the ConfigMap as it was.
        self.synced_at = float("-inf")

    async def refresh(self) -> LockState:
        """Read the ConfigMap (a missing one is an empty lock)."""
        try:
            config_map = await self.kube.call(
                self.kube.core.read_namespaced_config_map, self.name, self.namespace
            )
        except ApiException as error:
            if error.status != 404:
                raise
            self._state, self._resource_version = LockState(), None
        else:
            data = config_map.data or {}
            self._state = LockState.from_json(data.get(LOCK_DATA_KEY))
            self._resource_version = config_map.metadata.resource_version
        self._loaded = True
        self.synced_at = time.monotonic()
        return self._state.model_copy(deep=True)

    async def read(self) -> LockState:
        """The last state read or written (reads the ConfigMap the first time)."""
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
                    if error.status != 409:
                        raise
                    if self._on_conflict is not None:
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
