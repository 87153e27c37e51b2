"""What the lock holds: every node in maintenance and each window's recent history (pure).

The lock is the source of truth for "who holds a slot": the brain writes each step here before
taking it, so a restarted brain resumes from it. This module is its content model only;
`brain/lock.py` reads and writes it in its ConfigMap.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from brain.core.phase import IN_MAINTENANCE, Phase

LOCK_DATA_KEY = "state.json"
LOCK_FORMAT_VERSION = 1
COMPLETED_HISTORY_PER_WINDOW = 50
REBOOTED = "Rebooted"  # the result of a completed reboot (the others end without one)


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
    # DaemonSet pods the drain saw on the node before its reboot (None: not known, e.g. no
    # drain): with none, the health gate does not list the node's pods to wait for them.
    daemon_set_pods: int | None = Field(default=None, alias="daemonSetPods")
    # WaitingForNode saw the node NotReady (a Ready node with the old boot ID after that did
    # not reboot). Written only by older brains: this one keeps it in memory, and reads it.
    saw_not_ready: bool = Field(default=False, alias="sawNotReady")


class CompletedReboot(_LockModel):
    node: str
    finished: Moment
    result: str  # the Event reason: "Rebooted", "Released", "DrainAborted", "NodeDeleted"
    message: str = ""
    # The boot the node was rebooted from: a view that still shows it is older than this record.
    boot_id_before: str = Field(default="", alias="bootIDBefore")
    # The node's boot ID when it finished: a node still flagged at this same boot is not
    # rebooted again until its detector flags it anew (no reboot loops).
    boot_id: str = Field(default="", alias="bootID")


class WindowRecord(_LockModel):
    last_finished: Moment | None = Field(default=None, alias="lastFinished")
    # The last COMPLETED_HISTORY_PER_WINDOW outcomes (a bounded history, not a count).
    completed: list[CompletedReboot] = Field(default_factory=list)
    # The current rollout: when its first node was admitted, and how many reboots it has made.
    # A rollout runs until the window has nothing left to do (see `continues_rollout`); kept in
    # the lock, so a restarted brain counts on where the last one stopped.
    rollout_start: Moment | None = Field(default=None, alias="rolloutStart")
    rollout_done: int = Field(default=0, alias="rolloutDone")
    # The window's spec when its last node was admitted: nodes in flight finish with it even
    # if the window is deleted meanwhile.
    spec: dict[str, Any] | None = None
    # Nodes whose drain was aborted wait until then before they are admitted again.
    retry_after: dict[str, Moment] = Field(default_factory=dict, alias="retryAfter")

    def record(self, completed: CompletedReboot) -> None:
        self.completed.append(completed)
        del self.completed[:-COMPLETED_HISTORY_PER_WINDOW]
        if completed.result == REBOOTED:
            self.rollout_done += 1

    def admitted(self, now: datetime, continuing: bool) -> None:
        """Nodes of this window were just admitted: a new rollout starts (its count from zero)
        unless the current one `continuing` (see `continues_rollout`)."""
        if self.rollout_start is None or not continuing:
            self.rollout_start = now
            self.rollout_done = 0


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


def continues_rollout(
    state: LockState,
    window: str,
    waiting_since: Iterable[datetime | None],
    now: datetime,
) -> bool:
    """Whether an admission into `state` continues the window's current rollout.

    A rollout ends when the window goes idle: no node of it in the lock, none resting before a
    retry, no flagged node waiting since before its last finish. So it continues while the
    window holds a lease, while a node rests until a retry, or while a node admitted now or
    still waiting (`waiting_since`: their flag times, None when unknown) was flagged at or
    before the window's last finish (it waited through that finish: the window was never idle,
    say between openings or through delayBetweenNodes).
    """
    record = state.windows.get(window)
    if record is None or record.rollout_start is None:
        return False
    if any(lease.window == window for lease in state.nodes.values()):
        return True
    if any(_as_utc(until) > now for until in record.retry_after.values()):
        return True
    finished = record.last_finished
    if finished is None:
        return True  # admitted, but nothing finished yet: the same rollout
    return any(since is not None and _as_utc(since) <= finished for since in waiting_since)


class LockUnreadableError(RuntimeError):
    """The lock's data does not parse. Nothing is decided or written until it does: the data
    may be a person's mistake or a newer brain's format, and overwriting it would free every
    slot it holds."""


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
