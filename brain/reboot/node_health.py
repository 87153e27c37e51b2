"""The health gate's node-local check: the node's DaemonSet pods are Ready again.

After a reboot, node-local agents (CNI, CSI, log shippers) may not be Ready yet when the node
itself is; uncordoning then lands new pods on a node whose network or storage is not there.
The DaemonSets that run on the node are those whose pods are bound to it (a DaemonSet that
does not tolerate the node has no pod there), so the check is: every unfinished pod on the node
that a DaemonSet owns reports Ready. One pod list per check, filtered by the API server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes import client

from brain.integrations.blockers.result import name_a_few
from brain.kube import JsonApi

UNFINISHED_ON_NODE = "spec.nodeName={node},status.phase!=Succeeded,status.phase!=Failed"


def _owned_by_daemonset(pod: Mapping[str, Any]) -> bool:
    owners = (pod.get("metadata") or {}).get("ownerReferences") or []
    return any(owner.get("kind") == "DaemonSet" and owner.get("controller") for owner in owners)


def _ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def daemonset_pods_not_ready(pods: Sequence[Mapping[str, Any]]) -> list[str]:
    """namespace/name of the DaemonSet pods (being deleted ones aside) that are not Ready."""
    return sorted(
        f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        for pod in pods
        if _owned_by_daemonset(pod)
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
        and not _ready(pod)
    )


async def daemonset_pods_ready(api: client.ApiClient, node: str) -> tuple[bool, str]:
    """(True, "") when every DaemonSet pod on the node is Ready, else (False, which are not)."""
    listed = await asyncio.to_thread(
        JsonApi(api).get, "/api/v1/pods", {"fieldSelector": UNFINISHED_ON_NODE.format(node=node)}
    )
    pods = list(listed.get("items") or [])
    waiting = daemonset_pods_not_ready(pods)
    if waiting:
        noun = "pod" if len(waiting) == 1 else "pods"
        return False, f"DaemonSet {noun} not Ready on the node: {name_a_few(waiting)}"
    return True, ""
