"""The per-node reboot Job: its name, its shape for each reboot method, and its I/O.

The Job's name is derived from the node, its bootID and the maintenance it belongs to (attempt
and drain start, recorded in the lock), so creating "the reboot Job of this maintenance" twice
is impossible: the second create gets 409 AlreadyExists. That makes the Rebooting step
idempotent across brain crashes, and a later maintenance of the same node at the same boot
(after a release) gets a Job of its own instead of adopting the old one. Each method gets the
least privilege it needs; the HostAgent method gives Kubernetes no reboot power at all (a host
unit reads the approval file).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum, StrEnum
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from brain.kube import JsonApi
from pitstop import contract

JOB_NAME_PREFIX = "reboot-"
HASH_LENGTH = 10
MAX_NAME_LENGTH = 63
HELPER_COMMAND = "pitstop-reboot"
CONTAINER_NAME = "reboot"
DBUS_SOCKET_PATH = "/run/dbus/system_bus_socket"
APPROVALS_MOUNT_PATH = "/approvals"
DEFAULT_HOST_AGENT_DIRECTORY = "/var/lib/pitstop/approvals"
# Tolerate every taint: the node is cordoned and may carry any NoSchedule/NoExecute taint.
TOLERATE_EVERYTHING: dict[str, str] = {"operator": "Exists"}
_LABEL_VALUE_PATTERN = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
# A boot ID the Job's command may carry: the helper's and the chart's Job policy's pattern.
PLAIN_BOOT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class RebootMethod(StrEnum):
    DBUS = "DBus"
    SIGNAL = "Signal"
    COMMAND = "Command"
    HOST_AGENT = "HostAgent"


def _short_hash(*parts: str, length: int = HASH_LENGTH) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:length]


def reboot_job_name(node: str, boot_id: str) -> str:
    """`reboot-<node>-<hash of node and bootID>`: one name per boot, a valid DNS-1123 label.

    The node part is lowercased, dots and other characters become '-', and it is shortened so
    the whole stays within 63 characters; the hash keeps names of long, similar nodes apart.
    """
    digest = _short_hash(node, boot_id)
    room = MAX_NAME_LENGTH - len(JOB_NAME_PREFIX) - 1 - len(digest)
    readable = re.sub(r"[^a-z0-9-]+", "-", node.lower())[:room].strip("-")
    return f"{JOB_NAME_PREFIX}{readable}-{digest}" if readable else f"{JOB_NAME_PREFIX}{digest}"


def maintenance_job_name(node: str, boot_id: str, attempt: int, drain_started: datetime) -> str:
    """The Job name of one maintenance: the node's boot, the attempt and when its drain began.

    A later maintenance at the same boot (the node was released and admitted again, or a person
    asked for a retry) gets a name of its own, so it never takes the old Job for its reboot.
    """
    return reboot_job_name(node, f"{boot_id}#attempt-{attempt}#{drain_started.isoformat()}")


def label_value(text: str) -> str:
    """A label value that stands for `text`: itself if valid, else a hash of it (<= 63 chars)."""
    if _LABEL_VALUE_PATTERN.match(text):
        return text
    return _short_hash(text, length=32)


def _labels(node: str, boot_id: str) -> dict[str, str]:
    return {
        contract.JOB_NODE_LABEL: label_value(node),
        contract.JOB_BOOT_ID_LABEL: label_value(boot_id),
        contract.MANAGED_BY_LABEL: contract.MANAGED_BY_VALUE,
    }


def _annotations(boot_id: str, window: str) -> dict[str, str]:
    # The full bootID (the label may hold only its hash) and the window that asked for it.
    return {contract.JOB_BOOT_ID_LABEL: boot_id, contract.WINDOW_ANNOTATION: window}


def _no_capabilities() -> dict[str, Any]:
    return {
        "runAsUser": 0,
        "runAsNonRoot": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _boot_guard(boot_id: str) -> list[str]:
    """`--boot-id <id>`: the helper then does nothing on a node that has booted since.

    A Job can outlive the boot it was made for: made while the node was down for a reboot
    already under way (a release or retry mid-reboot), its pod runs once the node is back.
    A boot ID that is not a plain identifier (a node that reports none) gives the shape without
    it, which the helper runs unchecked, as before.
    """
    return ["--boot-id", boot_id] if PLAIN_BOOT_ID_PATTERN.fullmatch(boot_id) else []


def _method_pod_parts(
    method: RebootMethod, boot_id: str, host_agent_directory: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(container fields, pod spec fields) that make each method work, and nothing more."""
    if method is RebootMethod.DBUS:
        return (
            {
                "command": [HELPER_COMMAND, "dbus", *_boot_guard(boot_id)],
                "securityContext": _no_capabilities(),
                "volumeMounts": [{"name": "system-bus", "mountPath": DBUS_SOCKET_PATH}],
            },
            {
                "hostPID": False,
                "volumes": [
                    {
                        "name": "system-bus",
                        "hostPath": {"path": DBUS_SOCKET_PATH, "type": "Socket"},
                    }
                ],
            },
        )
    if method is RebootMethod.SIGNAL:
        security = _no_capabilities()
        security["capabilities"] = {"drop": ["ALL"], "add": ["KILL"]}
        return (
            {
                "command": [HELPER_COMMAND, "signal", *_boot_guard(boot_id)],
                "securityContext": security,
            },
            {"hostPID": True},
        )
    if method is RebootMethod.COMMAND:
        return (
            {
                "command": [HELPER_COMMAND, "command", *_boot_guard(boot_id)],
                "securityContext": {"privileged": True, "runAsUser": 0},
            },
            {"hostPID": True},
        )
    return (
        {
            "command": [
                HELPER_COMMAND,
                "approve",
                "--directory",
                APPROVALS_MOUNT_PATH,
                "--boot-id",
                boot_id,
            ],
            "securityContext": _no_capabilities(),
            "volumeMounts": [{"name": "approvals", "mountPath": APPROVALS_MOUNT_PATH}],
        },
        {
            "hostPID": False,
            "volumes": [
                {
                    "name": "approvals",
                    "hostPath": {"path": host_agent_directory, "type": "DirectoryOrCreate"},
                }
            ],
        },
    )


def _builtin_pod_template(
    method: RebootMethod, boot_id: str, image: str, host_agent_directory: str
) -> dict[str, Any]:
    container_fields, spec_fields = _method_pod_parts(method, boot_id, host_agent_directory)
    container = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "env": [
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        ],
        "resources": {
            "requests": {"cpu": "10m", "memory": "32Mi"},
            "limits": {"memory": "64Mi"},
        },
        **container_fields,
    }
    return {"metadata": {}, "spec": {"containers": [container], **spec_fields}}


def _merge_tolerations(existing: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    tolerations = list(existing or [])
    if TOLERATE_EVERYTHING not in tolerations:
        tolerations.append(dict(TOLERATE_EVERYTHING))
    return tolerations


def build_reboot_job(
    node: str,
    boot_id: str,
    method: RebootMethod | str,
    namespace: str,
    image: str,
    window: str,
    job_template: Mapping[str, Any] | None = None,
    host_agent_directory: str = DEFAULT_HOST_AGENT_DIRECTORY,
    ttl_seconds_after_finished: int = 3600,
) -> dict[str, Any]:
    """The reboot Job for `node` at `boot_id`, as a plain object ready to create.

    With `job_template` (a pod template: the window's own reboot procedure) `method` is ignored:
    the user's containers, volumes and security settings are kept, and what makes the Job safe
    is forced on top: pinned to the node, tolerating everything, restartPolicy Never, our labels
    (the user's other labels stay). The user may opt into a service account token explicitly.
    """
    labels = _labels(node, boot_id)
    annotations = _annotations(boot_id, window)
    if job_template is not None:
        template = copy.deepcopy(dict(job_template))
        template.setdefault("spec", {})
        template["spec"].setdefault("automountServiceAccountToken", False)
    else:
        template = _builtin_pod_template(RebootMethod(method), boot_id, image, host_agent_directory)
        template["spec"]["automountServiceAccountToken"] = False
    metadata = template.setdefault("metadata", {}) or {}
    template["metadata"] = metadata
    metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
    metadata["annotations"] = {**(metadata.get("annotations") or {}), **annotations}
    spec = template["spec"]
    # nodeName bypasses the scheduler, which would not place a pod on the cordoned node.
    spec["nodeName"] = node
    spec["tolerations"] = _merge_tolerations(spec.get("tolerations"))
    spec["restartPolicy"] = "Never"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": reboot_job_name(node, boot_id),
            "namespace": namespace,
            "labels": dict(labels),
            "annotations": dict(annotations),
        },
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": ttl_seconds_after_finished,
            "template": template,
        },
    }


# -- I/O ----------------------------------------------------------------------------------------


async def ensure_reboot_job(api: client.ApiClient, job: Mapping[str, Any]) -> bool:
    """Create the Job; True if this call created it, False if it already existed (409).

    The name carries the maintenance it belongs to (see reboot_job_name's callers), so a Job
    that exists under it is this maintenance's own, created before a crash or by another brain.
    """
    namespace = job["metadata"]["namespace"]
    try:
        await asyncio.to_thread(
            JsonApi(api).create, f"/apis/batch/v1/namespaces/{namespace}/jobs", dict(job)
        )
    except ApiException as error:
        if error.status == 409:
            return False
        raise
    return True


async def delete_reboot_job(api: client.ApiClient, namespace: str, name: str) -> bool:
    """Delete a reboot Job and its pod (a reboot given up on must not happen later).

    True if it was there. Background propagation: the pod goes with it.
    """
    try:
        await asyncio.to_thread(
            JsonApi(api).delete,
            f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}",
            {"propagationPolicy": "Background"},
        )
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


class JobPhase(Enum):
    MISSING = "Missing"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class JobState:
    phase: JobPhase
    message: str = ""


# Terminal conditions. FailureTarget/SuccessCriteriaMet come first on recent Kubernetes: the
# outcome is decided while the Job's pods are still terminating.
_SUCCESS_CONDITIONS = ("Complete", "SuccessCriteriaMet")
_FAILURE_CONDITIONS = ("Failed", "FailureTarget")


def job_state_from_object(job: Mapping[str, Any]) -> JobState:
    """Read a Job object's outcome from its conditions (pure)."""
    status = job.get("status") or {}
    conditions = [c for c in status.get("conditions") or [] if c.get("status") == "True"]
    for wanted, phase in (
        (_FAILURE_CONDITIONS, JobPhase.FAILED),
        (_SUCCESS_CONDITIONS, JobPhase.SUCCEEDED),
    ):
        for condition in conditions:
            if condition.get("type") in wanted:
                text = ": ".join(
                    part for part in (condition.get("reason"), condition.get("message")) if part
                )
                return JobState(phase, text or str(condition.get("type")))
    active, failed = status.get("active", 0), status.get("failed", 0)
    return JobState(JobPhase.RUNNING, f"{active} active, {failed} failed pods")


async def reboot_job_state(api: client.ApiClient, namespace: str, name: str) -> JobState:
    """Missing, Running, Succeeded or Failed (with the reason from the Job's conditions)."""
    try:
        job = await asyncio.to_thread(
            JsonApi(api).get, f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}"
        )
    except ApiException as error:
        if error.status == 404:
            return JobState(JobPhase.MISSING, f"Job {namespace}/{name} not found")
        raise
    return job_state_from_object(job)
