"""Kubernetes Events on windows and Nodes, posted by our own code (kopf's posting is off).

Events are posted only on transitions, so `kubectl describe` tells the story without spam. A
failure to post is logged and never interrupts the flow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from brain.kube import Kube

log = logging.getLogger("pitstop.events")
EVENT_NAMESPACE_FOR_CLUSTER_OBJECTS = "default"
COMPONENT = "pitstop-brain"


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
    def __init__(self, kube: Kube, host: str = "") -> None:
        self.kube = kube
        self.host = host

    async def post(
        self,
        target: ObjectReference,
        reason: str,
        message: str,
        kind: Literal["Normal", "Warning"] = "Normal",
    ) -> None:
        now = datetime.now(UTC)
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{target.name}.",
                "namespace": EVENT_NAMESPACE_FOR_CLUSTER_OBJECTS,
            },
            "involvedObject": target.as_dict(),
            "reason": reason,
            "message": message[:1024],
            "type": kind,
            "source": {"component": COMPONENT, "host": self.host},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.host or COMPONENT,
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1,
        }
        log.log(
            logging.WARNING if kind == "Warning" else logging.INFO,
            "%s %s/%s: %s: %s",
            *(kind, target.kind, target.name, reason, message),
            extra={"node" if target.kind == "Node" else "window": target.name, "reason": reason},
        )
        try:
            await self.kube.call(
                self.kube.core.create_namespaced_event,
                EVENT_NAMESPACE_FOR_CLUSTER_OBJECTS,
                body,
            )
        except Exception as error:
            log.warning(
                "could not post event %s on %s %s: %s", reason, target.kind, target.name, error
            )
