"""The reboot Job against the real local control plane: accepted, pinned, run once per boot."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from brain.drain.cordon import cordon
from brain.reboot.reboot_job import (
    JobPhase,
    RebootMethod,
    build_reboot_job,
    ensure_reboot_job,
    reboot_job_name,
    reboot_job_state,
)
from localcluster.nodes import boot_id, create_nodes, delete_nodes, wait_for
from pitstop import contract

pytestmark = pytest.mark.cluster

IMAGE = "registry.invalid/pitstop-reboot:test"


@pytest.fixture
def node(api_client: client.ApiClient) -> Iterator[str]:
    name = f"reboot-job-{uuid.uuid4().hex[:6]}"
    create_nodes(api_client, [name])
    # The flow cordons before it reboots: the Job must still land on the node.
    asyncio.run(cordon(api_client, name))
    yield name
    delete_nodes(api_client, [name])


def run_to_completion(
    api_client: client.ApiClient, namespace: str, job: dict[str, Any]
) -> list[Any]:
    """Create the Job (twice), wait until it succeeded; return its pods."""
    name = job["metadata"]["name"]
    assert asyncio.run(reboot_job_state(api_client, namespace, name)).phase is JobPhase.MISSING
    assert asyncio.run(ensure_reboot_job(api_client, job)) is True
    assert asyncio.run(ensure_reboot_job(api_client, job)) is False

    def succeeded() -> bool:
        state = asyncio.run(reboot_job_state(api_client, namespace, name))
        assert state.phase is not JobPhase.FAILED, state.message
        return state.phase is JobPhase.SUCCEEDED

    wait_for(succeeded, f"Job {name} to succeed", timeout=90)
    pods = (
        client.CoreV1Api(api_client)
        .list_namespaced_pod(namespace, label_selector=f"job-name={name}")
        .items
    )
    assert len(pods) == 1, "backoffLimit 0 and a single run: exactly one pod"
    return list(pods)


@pytest.mark.parametrize("method", list(RebootMethod))
def test_each_method_is_accepted_and_runs_once_on_the_pinned_node(
    api_client: client.ApiClient, namespace: str, node: str, method: RebootMethod
) -> None:
    boot = boot_id(api_client, node)
    job = build_reboot_job(node, boot, method, namespace, IMAGE, window="weekend")
    (pod,) = run_to_completion(api_client, namespace, job)
    assert pod.spec.node_name == node
    assert pod.metadata.labels[contract.JOB_NODE_LABEL] == node
    assert pod.metadata.labels[contract.JOB_BOOT_ID_LABEL] == boot
    assert pod.spec.automount_service_account_token is False
    expected_command = {
        RebootMethod.DBUS: ["pitstop-reboot", "dbus", "--boot-id", boot],
        RebootMethod.SIGNAL: ["pitstop-reboot", "signal", "--boot-id", boot],
        RebootMethod.COMMAND: ["pitstop-reboot", "command", "--boot-id", boot],
        RebootMethod.HOST_AGENT: [
            "pitstop-reboot",
            "approve",
            "--directory",
            "/approvals",
            "--boot-id",
            boot,
        ],
    }[method]
    assert pod.spec.containers[0].command == expected_command
    # The API server kept the privileges each method asks for, and no more.
    assert bool(pod.spec.host_pid) == (method in (RebootMethod.SIGNAL, RebootMethod.COMMAND))
    security = pod.spec.containers[0].security_context
    assert bool(security.privileged) == (method is RebootMethod.COMMAND)
    stored = client.BatchV1Api(api_client).read_namespaced_job(job["metadata"]["name"], namespace)
    assert stored.spec.backoff_limit == 0
    assert stored.spec.ttl_seconds_after_finished == 3600
    assert stored.metadata.name == reboot_job_name(node, boot)


def test_a_window_template_job_runs_with_the_users_container(
    api_client: client.ApiClient, namespace: str, node: str
) -> None:
    template = {
        "metadata": {"labels": {"team": "ops"}},
        "spec": {
            "containers": [
                {
                    "name": "custom",
                    "image": "registry.invalid/ours:1",
                    "command": ["/usr/local/bin/reboot-my-way"],
                }
            ]
        },
    }
    boot = boot_id(api_client, node)
    job = build_reboot_job(
        node, boot, RebootMethod.DBUS, namespace, IMAGE, window="weekend", job_template=template
    )
    (pod,) = run_to_completion(api_client, namespace, job)
    assert pod.spec.node_name == node
    assert [container.name for container in pod.spec.containers] == ["custom"]
    assert pod.metadata.labels["team"] == "ops"


def test_a_new_boot_gets_a_new_job(api_client: client.ApiClient, namespace: str, node: str) -> None:
    first = build_reboot_job(node, "boot-a", RebootMethod.SIGNAL, namespace, IMAGE, "weekend")
    second = build_reboot_job(node, "boot-b", RebootMethod.SIGNAL, namespace, IMAGE, "weekend")
    assert asyncio.run(ensure_reboot_job(api_client, first)) is True
    assert asyncio.run(ensure_reboot_job(api_client, second)) is True
    assert asyncio.run(ensure_reboot_job(api_client, first)) is False
