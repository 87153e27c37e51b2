"""The drain against the real local control plane: evictions, budgets, refusals, cancellation."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client

from brain.core.api import EVICTION, ApiRequest
from brain.drain.budgets import pdbs_healthy
from brain.drain.classify import DrainOptions, PodRef
from brain.drain.cordon import cordon, uncordon
from brain.drain.evictions import DrainResult, drain_node, force_delete
from brain.kube import ApiRequests
from localcluster.controlplane import ControlPlane
from localcluster.nodes import (
    create_bare_pod,
    create_deployment,
    create_nodes,
    create_pdb,
    delete_nodes,
    pod_template,
    running_pods,
    wait_for,
)
from tests.conftest import api_client_for

pytestmark = pytest.mark.cluster


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def deadline_in(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


class Nodes:
    """Kwok nodes of one test, all carrying a group label the test's workloads select."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.group = unique("drain")
        self.names: list[str] = []

    def add(self) -> str:
        name = unique(self.group)
        create_nodes(self.api_client, [name], labels={"drain-group": self.group})
        self.names.append(name)
        return name

    @property
    def selector(self) -> dict[str, str]:
        return {"drain-group": self.group}


class Counted:
    """An ApiClient of its own for the code under test, its requests counted by the brain's one
    wrapper (brain/kube.py), as the brain counts all of its own: the test's other requests (set
    up, checks, samplers) go through the shared client and are not counted."""

    def __init__(self, plane: ControlPlane) -> None:
        self.api_client = api_client_for(plane)
        self.evictions_sent: list[float] = []  # monotonic, when each eviction was sent
        self._requests = ApiRequests(observe=self._observe)
        self._requests.install(self.api_client)

    def _observe(self, request: ApiRequest) -> None:
        if request.resource == EVICTION:
            self.evictions_sent.append(time.monotonic() - request.seconds)

    @property
    def requests(self) -> dict[str, int]:
        """Requests so far by "verb resource" ("create pods/eviction", "watch pods")."""
        return self._requests.counts

    @property
    def evictions(self) -> int:
        return self.requests.get(f"create {EVICTION}", 0)


@pytest.fixture
def counted(cluster: ControlPlane) -> Iterator[Counted]:
    made = Counted(cluster)
    yield made
    made.api_client.close()


@pytest.fixture
def nodes(api_client: client.ApiClient) -> Iterator[Nodes]:
    created = Nodes(api_client)
    yield created
    delete_nodes(api_client, created.names)


def pods_on(api_client: client.ApiClient, namespace: str, node: str, app: str) -> list[Any]:
    return [
        pod
        for pod in running_pods(api_client, namespace, f"app={app}")
        if pod.spec.node_name == node and pod.metadata.deletion_timestamp is None
    ]


def wait_running(api_client: client.ApiClient, namespace: str, app: str, count: int) -> list[Any]:
    return wait_for(  # type: ignore[no-any-return]
        lambda: (
            (pods := running_pods(api_client, namespace, f"app={app}"))
            and len(pods) == count
            and pods
        ),
        f"{count} pods of {app} running",
        timeout=60,
    )


def wait_budget_observed(api_client: client.ApiClient, namespace: str, name: str) -> None:
    policy = client.PolicyV1Api(api_client)

    def observed() -> bool:
        budget = policy.read_namespaced_pod_disruption_budget(name, namespace)
        return bool(
            budget.status and budget.status.observed_generation and budget.status.expected_pods
        )

    wait_for(observed, f"PDB {namespace}/{name} observed", timeout=60)


def create_daemonset_on(
    api_client: client.ApiClient, namespace: str, name: str, selector: dict[str, str]
) -> None:
    """A DaemonSet limited to this test's nodes (others' nodes are left alone)."""
    client.AppsV1Api(api_client).create_namespaced_daemon_set(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": name},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": pod_template(name, selector),
            },
        },
    )


def test_cordon_and_uncordon_are_idempotent(
    api_client: client.ApiClient, nodes: Nodes, counted: Counted
) -> None:
    node = nodes.add()
    core = client.CoreV1Api(api_client)

    async def scenario() -> None:
        await cordon(counted.api_client, node)
        await cordon(counted.api_client, node)
        assert core.read_node(node).spec.unschedulable is True
        await uncordon(counted.api_client, node)
        await uncordon(counted.api_client, node)
        assert not core.read_node(node).spec.unschedulable

    asyncio.run(scenario())
    assert counted.requests == {"patch nodes": 4}


def test_drain_evicts_deployment_pods_and_skips_the_daemonset(
    api_client: client.ApiClient, namespace: str, nodes: Nodes, counted: Counted
) -> None:
    first = nodes.add()
    create_deployment(api_client, namespace, "web", replicas=3, node_selector=nodes.selector)
    create_daemonset_on(api_client, namespace, "agent", nodes.selector)
    wait_running(api_client, namespace, "web", 3)
    wait_running(api_client, namespace, "agent", 1)
    second = nodes.add()
    wait_running(api_client, namespace, "agent", 2)

    async def scenario() -> Any:
        await cordon(api_client, first)
        return await drain_node(counted.api_client, first, DrainOptions(), deadline_in(60))

    result = asyncio.run(scenario())
    assert result.completed, result.message
    assert (result.evicted, result.skipped) == (3, 1)
    assert result.daemon_set_pods == 1  # the health gate waits for it after the reboot
    assert result.remaining == () and result.problems == ()
    assert "3 pods evicted" in result.message
    # One list of the node's pods, one of the budgets, one watch, one eviction per pod.
    assert counted.requests == {
        "list pods": 1,
        "list poddisruptionbudgets": 1,
        "watch pods": 1,
        "create pods/eviction": 3,
    }
    assert pods_on(api_client, namespace, first, "web") == []
    assert len(pods_on(api_client, namespace, first, "agent")) == 1
    # The ReplicaSet recreated the pods on the other node.
    wait_for(
        lambda: len(pods_on(api_client, namespace, second, "web")) == 3,
        "web pods recreated on the second node",
        timeout=60,
    )


def test_a_bare_pod_is_refused_without_force_and_evicted_with_it(
    api_client: client.ApiClient, namespace: str, nodes: Nodes
) -> None:
    node = nodes.add()
    create_bare_pod(api_client, namespace, "lonely", node)
    create_deployment(api_client, namespace, "web", replicas=1, node_selector=nodes.selector)
    wait_running(api_client, namespace, "lonely", 1)
    wait_running(api_client, namespace, "web", 1)

    refused = asyncio.run(drain_node(api_client, node, DrainOptions(), deadline_in(30)))
    assert not refused.completed
    assert [problem.pod.name for problem in refused.problems] == ["lonely"]
    assert f"{namespace}/lonely" in refused.message and "no controller" in refused.message
    # Like kubectl drain, nothing at all is evicted while a pod is refused.
    assert len(pods_on(api_client, namespace, node, "web")) == 1
    assert len(pods_on(api_client, namespace, node, "lonely")) == 1

    # Cordoned first, as the drain's callers do: otherwise web's replacement can land on this
    # node again, and the drain (which evicts pods that arrive while it runs) chases it.
    asyncio.run(cordon(api_client, node))
    forced = asyncio.run(drain_node(api_client, node, DrainOptions(force=True), deadline_in(30)))
    assert forced.completed, forced.message
    assert forced.evicted == 2 and forced.eviction_attempts == 2
    core = client.CoreV1Api(api_client)
    assert [
        pod.metadata.name
        for pod in core.list_namespaced_pod(namespace).items
        if pod.metadata.name == "lonely"
    ] == []


def web_behind_a_budget_that_allows_nothing(
    api_client: client.ApiClient, namespace: str, nodes: Nodes
) -> None:
    """Two web pods on the test's nodes, running, under a PDB (minAvailable 2) the disruption
    controller has observed: every eviction is refused until the budget changes."""
    create_deployment(
        api_client, namespace, "web", replicas=2, node_selector=nodes.selector, pdb_min_available=2
    )
    wait_running(api_client, namespace, "web", 2)
    wait_budget_observed(api_client, namespace, "web")


def test_a_budget_that_allows_nothing_is_retried_at_a_steady_pace_until_the_deadline(
    api_client: client.ApiClient, namespace: str, nodes: Nodes, counted: Counted
) -> None:
    node = nodes.add()
    web_behind_a_budget_that_allows_nothing(api_client, namespace, nodes)
    options = DrainOptions(eviction_retry_seconds=0.5)
    started = time.monotonic()
    result = asyncio.run(drain_node(counted.api_client, node, options, deadline_in(3)))
    elapsed = time.monotonic() - started

    assert not result.completed
    assert result.message == f"2 pods still protected by PDB {namespace}/web at the drain timeout"
    assert result.blocking_pdbs == (f"{namespace}/web",)
    assert sorted(pod.name for pod in result.remaining) == sorted(
        pod.metadata.name for pod in pods_on(api_client, namespace, node, "web")
    )
    assert result.evicted == 0
    assert 2.5 < elapsed < 6
    # Each of the 2 pods tried about once per 0.5 s over 3 s: ~7 attempts each, never a tight loop.
    attempts = counted.evictions
    assert attempts == result.eviction_attempts
    assert 2 * 5 <= attempts <= 2 * 9, attempts

    # onTimeout=Force: delete them ignoring the budget.
    deleted = asyncio.run(force_delete(api_client, result.remaining, grace_period_seconds=0))
    assert deleted == 2
    remaining_uids = {pod.uid for pod in result.remaining}
    wait_for(
        lambda: (
            not {pod.metadata.uid for pod in running_pods(api_client, namespace, "app=web")}
            & remaining_uids
        ),
        "the forced pods gone",
        timeout=30,
    )
    # A second forced delete of the same (replaced) pods changes nothing.
    assert asyncio.run(force_delete(api_client, result.remaining, grace_period_seconds=0)) == 0


def test_a_budget_that_allows_one_lets_pods_go_one_at_a_time(
    api_client: client.ApiClient, namespace: str, nodes: Nodes, counted: Counted
) -> None:
    first = nodes.add()
    create_deployment(
        api_client,
        namespace,
        "web",
        replicas=3,
        node_selector=nodes.selector,
        pdb_max_unavailable=1,
    )
    wait_running(api_client, namespace, "web", 3)
    wait_budget_observed(api_client, namespace, "web")
    nodes.add()
    asyncio.run(cordon(api_client, first))

    # A sampler records how many web pods are running and not terminating, all along.
    core = client.CoreV1Api(api_client)
    low_water = [3]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
            alive = [
                pod
                for pod in pods
                if pod.status.phase == "Running" and pod.metadata.deletion_timestamp is None
            ]
            low_water[0] = min(low_water[0], len(alive))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = asyncio.run(
            drain_node(
                counted.api_client, first, DrainOptions(eviction_retry_seconds=0.5), deadline_in(90)
            )
        )
    finally:
        stop.set()
        sampler.join(5)
    assert result.completed, result.message
    assert result.evicted == 3
    assert result.pdbs == (f"{namespace}/web",)
    # The pods went one at a time as the budget allowed: never fewer than 2 of 3 alive. (Whether
    # the budget had to refuse an eviction on the way depends on how fast the replacement pods
    # came up, so the number of attempts is only bounded below.)
    assert counted.evictions >= 3
    assert low_water[0] >= 2, f"{low_water[0]} web pods alive at one point"
    assert pods_on(api_client, namespace, first, "web") == []

    def healthy() -> bool:
        ok, _ = asyncio.run(pdbs_healthy(api_client, result.pdbs))
        return ok

    wait_for(healthy, "the budget healthy again", timeout=60)


def test_pdbs_healthy_reports_a_budget_short_of_pods(
    api_client: client.ApiClient, namespace: str
) -> None:
    # Two replicas that can never be scheduled: the budget expects 2 and has 0 healthy.
    create_deployment(
        api_client, namespace, "stuck", replicas=2, node_selector={"drain-group": "no-such-node"}
    )
    create_pdb(api_client, namespace, "stuck", {"app": "stuck"}, max_unavailable=1)
    policy = client.PolicyV1Api(api_client)
    wait_for(
        lambda: (
            policy.read_namespaced_pod_disruption_budget("stuck", namespace).status.expected_pods
            == 2
        ),
        "the budget to expect 2 pods",
        timeout=60,
    )
    ok, message = asyncio.run(pdbs_healthy(api_client, [f"{namespace}/stuck"]))
    assert not ok
    assert message == f"PDB {namespace}/stuck: 0 of 2 pods healthy"
    # A budget that no longer exists has nothing to wait for.
    ok, _ = asyncio.run(pdbs_healthy(api_client, [f"{namespace}/gone"]))
    assert ok


def test_a_cancelled_drain_stops_cleanly_and_a_later_one_resumes(
    api_client: client.ApiClient, namespace: str, nodes: Nodes
) -> None:
    first = nodes.add()
    web_behind_a_budget_that_allows_nothing(api_client, namespace, nodes)
    nodes.add()
    asyncio.run(cordon(api_client, first))

    async def cancel_midway() -> float:
        task = asyncio.create_task(
            drain_node(
                api_client, first, DrainOptions(eviction_retry_seconds=0.5), deadline_in(120)
            )
        )
        await asyncio.sleep(1.5)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    assert asyncio.run(cancel_midway()) < 3
    assert not [
        thread for thread in threading.enumerate() if thread.name.startswith("pitstop-drain-watch-")
    ]
    # Nothing was evicted; the brain resumes later, when the budget allows it.
    assert len(pods_on(api_client, namespace, first, "web")) == 2
    client.PolicyV1Api(api_client).delete_namespaced_pod_disruption_budget("web", namespace)
    result = asyncio.run(drain_node(api_client, first, DrainOptions(), deadline_in(60)))
    assert result.completed, result.message
    assert result.evicted == 2 and result.pdbs == ()


@pytest.mark.parametrize("force", [True, False])
def test_a_pod_that_arrives_during_the_drain_is_evicted_too_or_stops_it(
    api_client: client.ApiClient, namespace: str, nodes: Nodes, counted: Counted, force: bool
) -> None:
    """For a moment after the cordon the scheduler can still bind a pod to the node (its cache
    has not seen the cordon): the drain treats such a pod like those it found, so nothing is
    left for the reboot to kill. One it may not evict (no controller, no force) stops it."""
    node = nodes.add()
    create_deployment(
        api_client, namespace, "held", replicas=1, node_selector=nodes.selector, pdb_min_available=1
    )
    wait_running(api_client, namespace, "held", 1)
    wait_budget_observed(api_client, namespace, "held")
    asyncio.run(cordon(api_client, node))
    options = DrainOptions(force=force, eviction_retry_seconds=0.5)

    async def scenario() -> Any:
        drain = asyncio.create_task(
            drain_node(counted.api_client, node, options, deadline_in(60), watch_list=True)
        )
        # The drain has listed the node's pods and is evicting them (held by the budget).
        await asyncio.to_thread(wait_for, lambda: counted.evictions, "the first eviction")
        await asyncio.to_thread(create_bare_pod, api_client, namespace, "late", node)
        if force:
            core = client.CoreV1Api(api_client)

            def late_pod_gone() -> bool:
                pods = core.list_namespaced_pod(namespace).items
                return "late" not in {pod.metadata.name for pod in pods}

            await asyncio.to_thread(
                wait_for, late_pod_gone, "the late pod evicted (while the held one waits)"
            )
            # Only the held pod is left: let it go.
            await asyncio.to_thread(
                client.PolicyV1Api(api_client).delete_namespaced_pod_disruption_budget,
                "held",
                namespace,
            )
        return await drain

    result = asyncio.run(scenario())
    if force:
        assert result.completed, result.message
        assert result.evicted == 2 and result.problems == ()
        assert pods_on(api_client, namespace, node, "held") == []
    else:
        assert not result.completed
        assert [problem.pod.name for problem in result.problems] == ["late"]
        assert "arrived during the drain" in result.message and "no controller" in result.message
        # The drain stopped at once: the held pod is still there, the late one untouched.
        assert len(pods_on(api_client, namespace, node, "held")) == 1
        assert len(pods_on(api_client, namespace, node, "late")) == 1


def test_force_delete_ignores_a_pod_that_is_already_gone(
    api_client: client.ApiClient, namespace: str
) -> None:
    assert asyncio.run(force_delete(api_client, [PodRef(namespace, "never-was", "x")])) == 0


def test_a_refused_eviction_is_retried_when_its_budget_allows_again_not_at_the_pace(
    api_client: client.ApiClient, namespace: str, nodes: Nodes, counted: Counted
) -> None:
    first = nodes.add()
    web_behind_a_budget_that_allows_nothing(api_client, namespace, nodes)
    nodes.add()  # where the replacements go
    asyncio.run(cordon(api_client, first))

    # The budget allows nothing at first; half a second into the drain it is relaxed (as when
    # the previous node's replacement pods turn ready): the disruption controller lets it allow
    # one disruption within a moment.
    policy = client.PolicyV1Api(api_client)
    started = time.monotonic()

    def relax() -> float:
        time.sleep(0.5)
        policy.patch_namespaced_pod_disruption_budget(
            "web", namespace, {"spec": {"minAvailable": 1}}
        )
        return time.monotonic()

    async def drain_and_relax() -> tuple[DrainResult, float]:
        relaxing = asyncio.create_task(asyncio.to_thread(relax))
        result = await drain_node(
            counted.api_client, first, DrainOptions(), deadline_in(60), watch_list=True
        )
        return result, await relaxing

    result, relaxed_at = asyncio.run(drain_and_relax())
    elapsed = time.monotonic() - started

    assert result.completed, result.message
    assert result.evicted == 2
    # Both pods were refused at once; the first retry follows the budget's change, not the pace.
    first_tries, retries = counted.evictions_sent[:2], counted.evictions_sent[2:]
    assert max(first_tries) - started < 0.5 and retries, counted.evictions_sent
    retried_after_relax = retries[0] - relaxed_at
    assert retried_after_relax < 1.5, f"retried {retried_after_relax:.2f} s after the budget"
    # The second pod waits for the first one's replacement to run: also well under the 5 s pace.
    assert elapsed < 4.5, f"drained in {elapsed:.2f} s"
    # The budget watch costs one request, and stands in for the list of budgets.
    budget_requests = {
        name: count for name, count in counted.requests.items() if "poddisruptionbudgets" in name
    }
    assert budget_requests == {"watch poddisruptionbudgets": 1}, counted.requests
    assert result.pdbs == (f"{namespace}/web",)
