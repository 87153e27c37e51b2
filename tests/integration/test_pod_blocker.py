"""The pod blocker against the real API server: pods created and deleted in the local cluster."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client

from brain.integrations.blockers import NOT_BLOCKED, BlockerResult, PodSelector, Reason, check_pods
from localcluster.nodes import create_bare_pod, create_nodes, delete_nodes, wait_for


@pytest.fixture
def node(api_client: client.ApiClient) -> Iterator[str]:
    name = f"blocker-{uuid.uuid4().hex[:6]}"
    create_nodes(api_client, [name])
    yield name
    delete_nodes(api_client, [name])


def check(
    api_client: client.ApiClient, *selectors: PodSelector, node: str | None = None
) -> BlockerResult:
    return asyncio.run(check_pods(api_client, selectors, node_name=node, timeout_seconds=10))


def test_matching_pod_blocks_until_it_is_deleted(
    api_client: client.ApiClient, namespace: str, node: str
) -> None:
    core = client.CoreV1Api(api_client)
    app = f"backup-{uuid.uuid4().hex[:6]}"
    core.patch_namespace(namespace, {"metadata": {"labels": {"pitstop-test/team": app}}})
    selector = PodSelector(label_selector=f"app={app}")
    in_team = PodSelector(
        label_selector=f"app={app}", namespace_selector=f"pitstop-test/team={app}"
    )
    elsewhere = PodSelector(
        label_selector=f"app={app}", namespace_selector="pitstop-test/team=none"
    )
    assert check(api_client, selector) == NOT_BLOCKED

    create_bare_pod(api_client, namespace, app, node)
    result = check(api_client, selector)
    assert result.blocked and result.reason == Reason.BLOCKING_PODS
    assert result.message == f"1 pod blocks the window: {namespace}/{app}"
    assert check(api_client, in_team).blocked
    assert check(api_client, elsewhere) == NOT_BLOCKED
    # kured's per-node form: only pods on the given node count.
    assert check(api_client, selector, node=node).blocked
    assert check(api_client, selector, node="some-other-node") == NOT_BLOCKED

    core.delete_namespaced_pod(app, namespace, grace_period_seconds=0)
    wait_for(lambda: check(api_client, selector) == NOT_BLOCKED, "the pod blocker to clear")


def test_many_pods_are_counted_and_a_few_named(
    api_client: client.ApiClient, namespace: str, node: str
) -> None:
    core = client.CoreV1Api(api_client)
    for index in range(7):
        create_bare_pod(api_client, namespace, f"batch-{index}", node)
        core.patch_namespaced_pod(
            f"batch-{index}", namespace, {"metadata": {"labels": {"batch": namespace}}}
        )
    result = check(api_client, PodSelector(label_selector=f"batch={namespace}"))
    assert result.message.startswith("7 pods block the window: ")
    assert f"{namespace}/batch-0" in result.message and "and 2 more" in result.message


def test_finished_pods_do_not_block(
    api_client: client.ApiClient, namespace: str, node: str
) -> None:
    core = client.CoreV1Api(api_client)
    create_bare_pod(api_client, namespace, "done-job", node)
    selector = PodSelector(label_selector="app=done-job", namespace_selector="")
    assert check(api_client, selector).blocked
    # Let kwok finish starting the pod first, or it would set the phase back to Running.
    wait_for(
        lambda: core.read_namespaced_pod("done-job", namespace).status.phase == "Running",
        "the pod to run",
    )
    core.patch_namespaced_pod_status("done-job", namespace, {"status": {"phase": "Succeeded"}})
    wait_for(
        lambda: check(api_client, selector) == NOT_BLOCKED, "the finished pod to stop blocking"
    )
