"""Kubernetes Events on windows and Nodes, posted by our own code (kopf's posting is off).

Events are posted only on transitions, so `kubectl describe` tells the story without spam. A
failure to post is logged and never interrupts the flow.

In order, also within one second: `kubectl describe` sorts Events by `lastTimestamp`, which
the API server keeps in whole seconds (and which events.k8s.io/v1 Events may not set at all),
and keeps the API's list order, by name, among Events of the same second. So each Event is
named `<object>.<hex nanoseconds>`, as client-go's recorders name theirs: the name order is
the time order. Each also carries the newer fields (`eventTime` in microseconds,
`reportingComponent`, `reportingInstance`, `action`) for tools that read events.k8s.io/v1.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from brain.kube import Kube

log = logging.getLogger("pitstop.events")
EVENT_NAMESPACE_FOR_CLUSTER_OBJECTS = "default"
COMPONENT = "pitstop-brain"
NOTE_LIMIT_BYTES = 1024  # the API server's limit on the message of an Event with eventTime
NAME_LIMIT = 253  # a DNS subdomain


@dataclass(frozen=True)
class ObjectReference:
    kind: str
    name: str
    uid: str = ""
    api_version: str = "v1"

    def as_dict(self) -> dict[str, str]:
        reference = {"kind": self.kind, "name": self.name, "apiVersion": self.api_version}
        if self.uid:
            reference["uid"] = self.uid
        return reference


def window_reference(name: str, uid: str = "") -> ObjectReference:
    return ObjectReference("NodesMaintenanceWindow", name, uid, "pitstop.dev/v1alpha1")


def node_reference(name: str, uid: str = "") -> ObjectReference:
    return ObjectReference("Node", name, uid, "v1")


class EventRecorder:
    def __init__(
        self, kube: Kube, host: str = "", clock_ns: Callable[[], int] = time.time_ns
    ) -> None:
        self.kube = kube
        self.host = host
        # The API server's time (brain/core/clock.py): a skewed host posts no Event in the future.
        self.clock_ns = clock_ns

    async def post(
        self,
        target: ObjectReference,
        reason: str,
        message: str,
        kind: Literal["Normal", "Warning"] = "Normal",
    ) -> None:
        """One Event, one request."""
        body = event_body(target, reason, message, kind, self.host, self.clock_ns())
        log.log(
            logging.WARNING if kind == "Warning" else logging.INFO,
            "%s %s/%s: %s: %s",
            *(kind, target.kind, target.name, reason, message),
            extra={"node" if target.kind == "Node" else "window": target.name, "reason": reason},
        )
        try:
            await self.kube.create(
                f"/api/v1/namespaces/{EVENT_NAMESPACE_FOR_CLUSTER_OBJECTS}/events", body
            )
        except Exception as error:
            log.warning(
                "could not post event %s on %s %s: %s", reason, target.kind, target.name, error
            )


def event_name(target: str, nanoseconds: int) -> str:
    """`<object>.<hex nanoseconds>`: names sort as the Events were posted (16 hex digits until
    the year 2262); a long object name is shortened rather than the time dropped."""
    suffix = f".{nanoseconds:x}"
    return target[: NAME_LIMIT - len(suffix)].rstrip(".-") + suffix


def event_body(
    target: ObjectReference,
    reason: str,
    message: str,
    kind: Literal["Normal", "Warning"],
    host: str,
    nanoseconds: int,
) -> dict[str, object]:
    """A core/v1 Event with both its legacy fields (what `kubectl describe` shows and sorts by)
    and the newer ones (a microsecond `eventTime`, which requires reportingComponent,
    reportingInstance and action; the action is the reason: each reason names one step)."""
    seconds_since_epoch, rest = divmod(nanoseconds, 1_000_000_000)
    now = datetime.fromtimestamp(seconds_since_epoch, UTC).replace(microsecond=rest // 1000)
    seconds = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": event_name(target.name, nanoseconds),
            "namespace": EVENT_NAMESPACE_FOR_CLUSTER_OBJECTS,
        },
        "involvedObject": target.as_dict(),
        "reason": reason,
        "action": reason,
        "message": message.encode()[:NOTE_LIMIT_BYTES].decode(errors="ignore"),
        "type": kind,
        "source": {"component": COMPONENT, "host": host},
        "reportingComponent": COMPONENT,
        "reportingInstance": (host or COMPONENT)[:128],
        "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "firstTimestamp": seconds,
        "lastTimestamp": seconds,
        "count": 1,
    }
