"""The lock: one ConfigMap that records every node in maintenance.

It is the source of truth for "who holds a slot": the brain writes each step here before taking
it, so a restarted brain resumes from it. Every change is a read-modify-write guarded by the
ConfigMap's resourceVersion; a 409 means someone else wrote first, so the caller re-reads and
decides again. This module holds the content model (pure) and the ConfigMap I/O.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

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


class CompletedReboot(_LockModel):
    node: str
    finished: datetime
    result: str  # "Succeeded" | "Released" | "Aborted"
    message: str = ""


class WindowRecord(_LockModel):
    last_finished: datetime | None = Field(default=None, alias="lastFinished")
    completed: list[CompletedReboot] = Field(default_factory=list)


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
