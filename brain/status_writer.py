"""One status writer among the brains: a Lease decides which brain writes window status.

Two brains (`replicas: 2`) both step nodes: every step goes through the lock's compare-and-swap,
so they never exceed a budget. But each would also write each window's status and post the
Events of its conditions from its own view, and two views a moment apart flap a window
(Degraded, Recovered, Degraded ...). So only the holder of the Lease `pitstop-status-writer`
(coordination.k8s.io/v1, in the brain's namespace) writes window status and condition Events.

The Lease is held on demand, not renewed on a timer: an idle brain sends no request at all.
Before a status write the brain asks `may_write()`. The holder answers at once while its hold is
fresh, renews it first (one update on the resourceVersion of its own last write, without a read)
once it is older than `renew_seconds`, and re-renews the same way after it lapsed while nothing
needed writing; a 409 means another brain took the Lease in between, and it is read again.
A brain that does not hold it reads the Lease and creates it, takes it when free or expired, or
follows; while it still has status to write it reads again at most every `renew_seconds`.

Expiry is judged as client-go's leader election does, by this brain's monotonic clock alone:
another holder's lease has expired when its record (resourceVersion) has not changed for the
whole lease duration since *we* saw it change, so no wall clock (skewed or not) is trusted;
reading seldom only makes that judgement later, never wrong (a resourceVersion never comes back).
A holder stops writing a margin before its own lease could have expired, counted from before its
last renewal was sent, so two brains never write at once. A holder that died is replaced within
the lease duration (plus one read period) of the other brain wanting to write, and a holder that
stops cleanly hands the Lease back (one request) so that the other takes over at once.

The price of no timer: a live holder that sees nothing to write cannot be told from a dead one,
so two brains whose views differ for long (two versions side by side in an upgrade) take the
Lease from each other, each after a lease duration of wanting to write; views a moment apart
converge first (a follower wants only while the window shows something else than it computes).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from kubernetes.client.exceptions import ApiException

from brain.kube import Kube

log = logging.getLogger("pitstop.status_writer")
LEASE_NAME = "pitstop-status-writer"
LEASE_SECONDS = 15.0
# A holder that writes renews once its hold is this old; a follower that wants to write reads
# the Lease at most this often.
RENEW_SECONDS = 5.0
# A holder stops writing this long before its lease could expire in another brain's eyes.
SAFETY_MARGIN_SECONDS = 2.0


def default_identity() -> str:
    """The brain's pod name (downward API): unique among running brains, and the same for a
    restarted container of that pod, which so takes its own Lease back at once instead of
    waiting for it to expire (the old process is gone). Without one: hostname and pid."""
    return os.environ.get("PITSTOP_POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class LeaseRecord:
    """What the election reads of the Lease."""

    holder: str
    resource_version: str
    transitions: int = 0


class Action(StrEnum):
    CREATE = "create"  # no Lease yet
    RENEW = "renew"  # ours: keep it
    ACQUIRE = "acquire"  # free, or its holder stopped renewing: take it (on its resourceVersion)
    FOLLOW = "follow"  # another brain holds it


def next_action(
    record: LeaseRecord | None, me: str, unchanged_for: float, lease_seconds: float
) -> Action:
    """What to do with the Lease as read. `unchanged_for`: seconds (our monotonic clock) since
    we last saw its record change."""
    if record is None:
        return Action.CREATE
    if record.holder == me:
        return Action.RENEW
    if not record.holder or unchanged_for >= lease_seconds:
        return Action.ACQUIRE
    return Action.FOLLOW


def seconds_until_next_look(
    action: Action, unchanged_for: float, lease_seconds: float, renew_seconds: float
) -> float:
    """A follower that wants to write looks again every `renew_seconds`, or when the holder's
    lease would expire if that is sooner (take-over within the lease duration)."""
    if action == Action.FOLLOW:
        return max(0.1, min(renew_seconds, lease_seconds - unchanged_for))
    return renew_seconds


class StatusWriter:
    """The election, asked before each status write: `may_write()` says whether this brain may
    write window status now (sending a request only when its hold is stale or absent);
    `is_writer` says whether its hold is valid at this moment (no request)."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        identity: str | None = None,
        on_change: Callable[[bool], None] | None = None,
        name: str = LEASE_NAME,
        lease_seconds: float = LEASE_SECONDS,
        renew_seconds: float = RENEW_SECONDS,
        now: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.identity = identity or default_identity()
        self.name = name
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self._on_change = on_change
        self._now = now or (lambda: datetime.now(UTC))
        self._monotonic = monotonic
        self._held_until = 0.0  # monotonic; 0: not the writer
        self._renewal_sent_at = 0.0  # monotonic, when our last successful write was sent
        self._seen_version = ""
        self._seen_changed_at = monotonic()
        # The Lease as our own last write left it: this brain holds it as far as it knows (its
        # hold may have lapsed meanwhile), and renews on it without a read.
        self._own: LeaseRecord | None = None
        self._next_look_at = 0.0  # monotonic: a follower reads no sooner
        self._holding = False  # what the log line last said
        self._failing = ""
        self._deciding = asyncio.Lock()

    @property
    def is_writer(self) -> bool:
        """This brain's hold is valid now: it may write window status without asking."""
        return self._monotonic() < self._held_until

    @property
    def holds_lease(self) -> bool:
        """The Lease names this brain as far as it knows (its hold valid, or lapsed while
        nothing needed writing and not taken by another brain since we last looked)."""
        return self._own is not None

    def seconds_until_next_look(self) -> float:
        """After a refusal: when asking again may change the answer (a follower's next read)."""
        return max(0.1, self._next_look_at - self._monotonic())

    async def may_write(self) -> bool:
        """Whether this brain may write window status now. No request while its hold is fresh;
        one renewal when it is stale or lapsed; one read (and perhaps a take-over) otherwise,
        at most every `renew_seconds` while another brain holds a live Lease."""
        async with self._deciding:
            now = self._monotonic()
            fresh = now - self._renewal_sent_at < self.renew_seconds
            if (self.is_writer and fresh) or now < self._next_look_at:
                # Our hold is fresh; or another brain held the Lease a moment ago, or the API
                # failed a moment ago (a hold still valid is still used).
                return self.is_writer
            try:
                await self._decide()
                if self._failing:
                    log.info("status writer election works again")
                    self._failing = ""
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._next_look_at = self._monotonic() + self.renew_seconds
                if self._failing != type(error).__name__:
                    log.warning("status writer election failed, tried again: %s", error)
                    self._failing = type(error).__name__
            self._tell()
            return self.is_writer

    async def _decide(self) -> None:
        """Renew our own Lease on our last write (a 409: read and decide again), or read it and
        create, take or follow."""
        if self._own is not None:
            own = self._own
            if await self._try_write(Action.RENEW, own):
                return
            # Someone else wrote the Lease since (or deleted it): read what it is now.
        record = await self._read()
        if record is not None and record.resource_version != self._seen_version:
            self._seen_version = record.resource_version
            self._seen_changed_at = self._monotonic()
        unchanged_for = self._monotonic() - self._seen_changed_at
        action = next_action(record, self.identity, unchanged_for, self.lease_seconds)
        if action != Action.FOLLOW and await self._try_write(action, record):
            return
        self._next_look_at = self._monotonic() + seconds_until_next_look(
            Action.FOLLOW, unchanged_for, self.lease_seconds, self.renew_seconds
        )

    async def _try_write(self, action: Action, record: LeaseRecord | None) -> bool:
        """Write the Lease as its holder; False when another brain wrote it first (it holds
        it, or deleted it)."""
        sent = self._monotonic()
        try:
            await self._write(action, record)
        except ApiException as error:
            if error.status not in (404, 409):
                raise
            self._held_until = 0.0
            self._own = None
            return False
        self._renewal_sent_at = sent
        self._held_until = sent + self.lease_seconds - SAFETY_MARGIN_SECONDS
        self._next_look_at = 0.0
        return True

    async def release(self) -> None:
        """On a clean stop: hand the Lease back (one request, on our own last write) so that the
        other brain takes over at once instead of after the lease duration."""
        own = self._own
        self._held_until = 0.0
        self._own = None
        if own is None:
            return
        try:
            await self._replace(own, holder="", transitions=own.transitions)
        except Exception as error:  # a 409: another brain holds it already
            log.info("could not release the status writer Lease: %s", error)
        self._tell()

    def _tell(self) -> None:
        """Log (and tell `on_change`) when this brain becomes or stops being the Lease's holder;
        a hold that lapses while nothing needs writing is no change (it is renewed on the next
        write)."""
        holding = self._own is not None
        if holding != self._holding:
            self._holding = holding
            log.info(
                "this brain (%s) %s window status",
                self.identity,
                "writes" if holding else "no longer writes",
            )
            if self._on_change is not None:
                self._on_change(holding)

    async def _read(self) -> LeaseRecord | None:
        try:
            lease = await self.kube.get(self._path)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        spec = lease.get("spec") or {}
        return LeaseRecord(
            holder=str(spec.get("holderIdentity") or ""),
            resource_version=str(lease["metadata"]["resourceVersion"]),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    @property
    def _path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{self.name}"

    async def _write(self, action: Action, record: LeaseRecord | None) -> None:
        if action == Action.CREATE or record is None:
            written = await self.kube.create(
                f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases",
                self._body(self.identity, 0, acquired=True),
            )
            self._remember(written, 0)
            return
        taking = action == Action.ACQUIRE
        transitions = record.transitions + (1 if taking else 0)
        written = await self._replace(
            record, holder=self.identity, transitions=transitions, acquired=taking
        )
        self._remember(written, transitions)

    def _remember(self, written: Any, transitions: int) -> None:
        version = str((written.get("metadata") or {}).get("resourceVersion") or "")
        self._own = LeaseRecord(self.identity, version, transitions)
        self._seen_version = version
        self._seen_changed_at = self._monotonic()

    async def _replace(
        self, record: LeaseRecord, holder: str, transitions: int, acquired: bool = False
    ) -> Any:
        body = self._body(holder, transitions, acquired)
        body["metadata"]["resourceVersion"] = record.resource_version  # only over what we read
        return await self.kube.replace(self._path, body)

    def _body(self, holder: str, transitions: int, acquired: bool) -> dict[str, Any]:
        moment = self._now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        spec: dict[str, Any] = {
            "holderIdentity": holder,
            "leaseDurationSeconds": int(self.lease_seconds),
            "renewTime": moment,
            "leaseTransitions": transitions,
        }
        if acquired:
            spec["acquireTime"] = moment
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "pitstop"},
            },
            "spec": spec,
        }
