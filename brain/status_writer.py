"""One status writer among the brains: a Lease decides which brain writes window status.

Two brains (`replicas: 2`) both step nodes: every step goes through the lock's compare-and-swap,
so they never exceed a budget. But each would also write each window's status and post the
Events of its conditions from its own view, and two views a moment apart flap a window
(Degraded, Recovered, Degraded ...). So only the holder of the Lease `pitstop-status-writer`
(coordination.k8s.io/v1, in the brain's namespace) writes window status and condition Events.

Expiry is judged as client-go's leader election does, by this brain's monotonic clock alone:
another holder's lease has expired when its record (resourceVersion) has not changed for the
whole lease duration since *we* saw it change, so no wall clock (skewed or not) is trusted. A
holder stops writing a margin before its own lease could have expired, counted from before its
last renewal was sent, so two brains never write at once. Cost: one Lease read and, for the
holder, one renewal every `renew_seconds` (5 s: on the resourceVersion of its own last write,
without a read; a 409 means someone else wrote, and the Lease is read again), whatever the
number of reboots.
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
    """A holder renews every `renew_seconds`; a follower looks again at that pace, or when the
    holder's lease would expire if that is sooner (failover within the lease duration)."""
    if action == Action.FOLLOW:
        return max(0.1, min(renew_seconds, lease_seconds - unchanged_for))
    return renew_seconds


class StatusWriter:
    """Runs the election; `is_writer` says whether this brain may write window status now."""

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
        self._seen_version = ""
        self._seen_changed_at = monotonic()
        self._was_writer = False
        # The Lease as our own last write left it: the holder renews on it without a read.
        self._own: LeaseRecord | None = None
        self._failing = ""

    @property
    def is_writer(self) -> bool:
        return self._monotonic() < self._held_until

    async def run(self) -> None:
        while True:
            wait = self.renew_seconds
            try:
                wait = await self.step()
                if self._failing:
                    log.info("status writer election works again")
                    self._failing = ""
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if self._failing != type(error).__name__:
                    log.warning("status writer election failed, tried again: %s", error)
                    self._failing = type(error).__name__
            self._tell()
            await asyncio.sleep(min(wait, self.renew_seconds))

    async def step(self) -> float:
        """One look at the Lease (and a renewal or take-over); returns when to look again."""
        sent = self._monotonic()
        record = self._own if self.is_writer else None
        self._own = None
        if record is None:
            record = await self._read()
        if record is not None and record.resource_version != self._seen_version:
            self._seen_version = record.resource_version
            self._seen_changed_at = self._monotonic()
        unchanged_for = self._monotonic() - self._seen_changed_at
        action = next_action(record, self.identity, unchanged_for, self.lease_seconds)
        if action == Action.FOLLOW:
            self._held_until = 0.0
        else:
            try:
                await self._write(action, record)
            except ApiException as error:
                if error.status not in (404, 409):
                    raise
                self._held_until = 0.0  # another brain wrote first: it holds the Lease
                return 0.1
            self._held_until = sent + self.lease_seconds - SAFETY_MARGIN_SECONDS
        return seconds_until_next_look(
            action, unchanged_for, self.lease_seconds, self.renew_seconds
        )

    async def release(self) -> None:
        """On a clean stop: hand the Lease back so that the other brain takes over at once."""
        if not self.is_writer:
            return
        self._held_until = 0.0
        try:
            record = await self._read()
            if record is not None and record.holder == self.identity:
                await self._replace(record, holder="", transitions=record.transitions)
        except Exception as error:
            log.info("could not release the status writer Lease: %s", error)

    def _tell(self) -> None:
        writer = self.is_writer
        if writer != self._was_writer:
            self._was_writer = writer
            log.info(
                "this brain (%s) %s window status",
                self.identity,
                "writes" if writer else "no longer writes",
            )
            if self._on_change is not None:
                self._on_change(writer)

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
        version = (written.get("metadata") or {}).get("resourceVersion")
        if version:
            self._own = LeaseRecord(self.identity, str(version), transitions)
            self._seen_version = str(version)
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
