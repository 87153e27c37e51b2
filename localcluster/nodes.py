"""Simulated (kwok) nodes, workloads on them, and a simulated reboot.

A simulated reboot makes a kwok node look from the API exactly like a real node that reboots:
Ready goes False, the node comes back with a new `status.nodeInfo.bootID`, then Ready is True
again, and its sentinel file (if any) disappears. kwok's node stages are configured (see
controlplane._kwok_stages) to leave a node alone while it carries SIMULATED_DOWN_ANNOTATION,
and kwok keeps an existing bootID when it marks the node Ready again.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster.controlplane import (
    KWOK_NODE_ANNOTATION,
    KWOK_NODE_VALUE,
    SIMULATED_DOWN_ANNOTATION,
)

ZONE_LABEL = "topology.kubernetes.io/zone"
KWOK_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
# Pods that should run on kwok nodes tolerate kwok's taint.
KWOK_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def wait_for(check: Any, what: str, timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll until `check()` returns something truthy; return it, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as error:
            last_error = error
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error})"
    )


def is_ready(resource: Any) -> bool:
    """A Node's or a Pod's Ready condition is True."""
    for condition in (resource.status and resource.status.conditions) or []:
        if condition.type == "Ready":
            return bool(condition.status == "True")
    return False


def create_nodes(
    api_client: client.ApiClient,
    names: Iterable[str],
    labels: Mapping[str, str] | None = None,
    zone: str | None = None,
) -> list[str]:
    """Create kwok-managed nodes (with a first bootID) and wait until kwok made them Ready."""
    core = client.CoreV1Api(api_client)
    created: list[str] = []
    for name in names:
        # kubernetes.io/os as a real kubelet sets it (the detector DaemonSet selects Linux nodes).
        node_labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "type": "kwok",
            **(labels or {}),
        }
        if zone:
            node_labels[ZONE_LABEL] = zone
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": node_labels,
                # Born "down": kwok leaves the node alone until it has its boot ID (below).
                "annotations": {
                    KWOK_NODE_ANNOTATION: KWOK_NODE_VALUE,
                    SIMULATED_DOWN_ANNOTATION: "true",
                },
            },
            "spec": {"taints": [KWOK_TAINT]},
        }
        core.create_node(body)
        created.append(name)
    boots: dict[str, str] = {}
    for name in created:
        # The boot ID goes in before kwok ever sees the node (it is written by a status patch,
        # and kwok's first status write could otherwise race it and reset it to ""); then kwok
        # is let in, and its node-initialize stage keeps the boot ID it finds.
        boots[name] = str(uuid.uuid4())
        core.patch_node_status(name, {"status": {"nodeInfo": {"bootID": boots[name]}}})
        core.patch_node(name, {"metadata": {"annotations": {SIMULATED_DOWN_ANNOTATION: None}}})
    for name in created:
        wait_for(lambda name=name: is_ready(core.read_node(name)), f"node {name} Ready")
        actual = boot_id(api_client, name)
        if actual != boots[name]:
            raise RuntimeError(f"kwok replaced node {name}'s boot ID {boots[name]!r} by {actual!r}")
    return created


def delete_nodes(api_client: client.ApiClient, names: Iterable[str]) -> None:
    core = client.CoreV1Api(api_client)
    for name in names:
        with contextlib.suppress(ApiException):
            core.delete_node(name)


def boot_id(api_client: client.ApiClient, name: str) -> str:
    node = client.CoreV1Api(api_client).read_node(name)
    return str(node.status.node_info.boot_id or "")


def take_node_down(api_client: client.ApiClient, name: str, why: str = "node is down") -> None:
    """Ready goes False and kwok keeps its hands off: a host that is down (until brought up)."""
    core = client.CoreV1Api(api_client)
    core.patch_node(name, {"metadata": {"annotations": {SIMULATED_DOWN_ANNOTATION: "true"}}})
    now = _now()
    down = {
        "type": "Ready",
        "status": "False",
        "reason": "KubeletNotReady",
        "message": f"simulated: {why}",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }
    core.patch_node_status(name, {"status": {"conditions": [down]}})


def simulate_reboot(
    api_client: client.ApiClient,
    name: str,
    down_seconds: float = 1.0,
    sentinel: Path | None = None,
    new_boot_id: str | None = None,
) -> str:
    """Play a node's host rebooting; returns the new bootID.

    Ready goes False (kwok is told to keep its hands off), the sentinel file goes away (the
    host booted the new kernel), after `down_seconds` the node reports a new bootID, and then
    kwok marks it Ready again.
    """
    core = client.CoreV1Api(api_client)
    take_node_down(api_client, name, "rebooting")
    if sentinel is not None:
        sentinel.unlink(missing_ok=True)
    time.sleep(down_seconds)
    boot = new_boot_id or str(uuid.uuid4())
    core.patch_node_status(name, {"status": {"nodeInfo": {"bootID": boot}}})
    core.patch_node(name, {"metadata": {"annotations": {SIMULATED_DOWN_ANNOTATION: None}}})
    wait_for(lambda: is_ready(core.read_node(name)), f"node {name} Ready after reboot")
    return boot


# -- workloads --------------------------------------------------------------------------------


def pod_template(app: str, node_selector: Mapping[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "app", "image": "registry.invalid/fake:1"}],
        "tolerations": [KWOK_TOLERATION],
        "terminationGracePeriodSeconds": 0,
    }
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    return {"metadata": {"labels": {"app": app}}, "spec": spec}


def create_deployment(
    api_client: client.ApiClient,
    namespace: str,
    name: str,
    replicas: int,
    node_selector: Mapping[str, str] | None = None,
    pdb_max_unavailable: int | None = None,
    pdb_min_available: int | None = None,
) -> None:
    """A Deployment of fake pods on kwok nodes, optionally with a PodDisruptionBudget."""
    client.AppsV1Api(api_client).create_namespaced_deployment(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": pod_template(name, node_selector),
            },
        },
    )
    if pdb_max_unavailable is not None or pdb_min_available is not None:
        create_pdb(
            api_client,
            namespace,
            name,
            {"app": name},
            max_unavailable=pdb_max_unavailable,
            min_available=pdb_min_available,
        )


def create_pdb(
    api_client: client.ApiClient,
    namespace: str,
    name: str,
    match_labels: Mapping[str, str],
    max_unavailable: int | None = None,
    min_available: int | None = None,
) -> None:
    spec: dict[str, Any] = {"selector": {"matchLabels": dict(match_labels)}}
    if max_unavailable is not None:
        spec["maxUnavailable"] = max_unavailable
    if min_available is not None:
        spec["minAvailable"] = min_available
    client.PolicyV1Api(api_client).create_namespaced_pod_disruption_budget(
        namespace,
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": name},
            "spec": spec,
        },
    )


def create_daemonset(api_client: client.ApiClient, namespace: str, name: str) -> None:
    client.AppsV1Api(api_client).create_namespaced_daemon_set(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}}, "template": pod_template(name)},
        },
    )


def create_bare_pod(api_client: client.ApiClient, namespace: str, name: str, node: str) -> None:
    template = pod_template(name)
    client.CoreV1Api(api_client).create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, **template["metadata"]},
            "spec": {**template["spec"], "nodeName": node},
        },
    )


def running_pods(api_client: client.ApiClient, namespace: str, selector: str = "") -> list[Any]:
    pods = client.CoreV1Api(api_client).list_namespaced_pod(namespace, label_selector=selector)
    return [pod for pod in pods.items if pod.status.phase == "Running"]


def create_namespace(api_client: client.ApiClient, prefix: str = "test") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": name}})
    # Pods can only be created once the namespace's default service account exists.
    wait_for(lambda: core.read_namespaced_service_account("default", name), f"{name}/default SA")
    return name


def delete_namespace(api_client: client.ApiClient, name: str) -> None:
    with contextlib.suppress(ApiException):
        client.CoreV1Api(api_client).delete_namespace(name)
