"""The pending taint at scale, on the real API server (issue 18).

With 5,000 flagged nodes the brain wrote the taint one PATCH at a time inside its pass, before
admitting anyone (the first pass took 213 s), and 4,127 of its 9,027 PATCHes were refused with
422: each tested the node's whole taint list, which the control plane changes on its own (a
new node carries `node.kubernetes.io/not-ready` until it is Ready). Now the taint is written
after admission, in the background, 16 at once, touching only our own entry.
"""

from __future__ import annotations

import ast
import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from kubernetes import client, watch

from brain.core.node_view import node_view_from_object
from brain.core.status import PENDING_NODES_SHOWN
from brain.kube import Kube
from brain.node_updates import PENDING_TAINT, change_taints, read_node_raw
from brain.pending_taints import CONCURRENT_WRITES, PendingTaintWriter, TaintChange
from localcluster.nodes import create_nodes
from tests.integration.pitstop_env import TEST_LABEL, PitstopEnv

pytestmark = pytest.mark.cluster

OTHER = {"key": "example.com/other", "value": "x", "effect": "NoSchedule"}


def add_nodes_at_once(env: PitstopEnv, count: int) -> list[str]:
    """`count` kwok nodes created together (env.add_nodes waits for each in turn)."""
    names = [f"{env.run}-n{len(env.nodes) + index}" for index in range(count)]
    env.nodes.extend(names)  # removed by env.close, even if creation fails half-way
    create_nodes(env.api, names, labels={TEST_LABEL: env.run}, zone="zone-a")
    env.zones.update(dict.fromkeys(names, "zone-a"))

    def not_ready_taints_gone() -> bool:
        # The node lifecycle controller takes its not-ready taint off a moment after Ready.
        nodes = env.core.list_node(label_selector=f"{TEST_LABEL}={env.run}").items
        return not any(taint.key == NOT_READY for node in nodes for taint in node.spec.taints or [])

    env.wait(not_ready_taints_gone, "the control plane's not-ready taints gone", 120)
    return names


NOT_READY = "node.kubernetes.io/not-ready"


def taint_keys(env: PitstopEnv, name: str) -> list[str]:
    return [taint.key for taint in env.node(name).spec.taints or []]


class CountingKube(Kube):
    """The brain's client, counting how many node PATCHes are in flight at once."""

    def __init__(self, api: client.ApiClient) -> None:
        super().__init__(api)
        self.in_flight = 0
        self.most_in_flight = 0

    async def patch(self, path: str, body: Any, content_type: str | None = None) -> Any:
        if not path.startswith("/api/v1/nodes/"):
            return await super().patch(path, body, content_type)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await super().patch(path, body, content_type)
        finally:
            self.in_flight -= 1


def test_taint_patches_leave_other_taints_alone_and_survive_their_changes(
    env: PitstopEnv,
) -> None:
    [name] = add_nodes_at_once(env, 1)
    kube = Kube(client.ApiClient(env.api.configuration))  # its own client: only its requests
    core = env.core

    async def view() -> Any:
        return node_view_from_object(await read_node_raw(kube, name))

    stale = asyncio.run(view())
    # Someone else adds a taint after our view was taken: our append does not fail on it.
    core.patch_node(name, [{"op": "add", "path": "/spec/taints/-", "value": OTHER}])
    assert asyncio.run(change_taints(kube, stale, add=PENDING_TAINT))
    assert kube.requests == {"get nodes": 1, "patch nodes": 1}
    assert taint_keys(env, name) == ["kwok.x-k8s.io/node", OTHER["key"], PENDING_TAINT.key]
    # Already there (the view is stale): the duplicate is refused, read again once, done.
    assert not asyncio.run(change_taints(kube, stale, add=PENDING_TAINT))
    assert kube.requests == {"get nodes": 2, "patch nodes": 2}
    # Our entry moves (someone removes a taint before it): the tested index fails, one re-read.
    stale = asyncio.run(view())
    core.patch_node(
        name,
        [
            {"op": "test", "path": "/spec/taints/0/key", "value": "kwok.x-k8s.io/node"},
            {"op": "remove", "path": "/spec/taints/0"},
        ],
    )
    assert asyncio.run(change_taints(kube, stale, remove=(PENDING_TAINT.key,)))
    assert taint_keys(env, name) == [OTHER["key"]]
    assert kube.requests == {"get nodes": 4, "patch nodes": 4}
    # No taints left at all: the list is made only while there is none.
    core.patch_node(name, [{"op": "remove", "path": "/spec/taints"}])
    empty = asyncio.run(view())
    core.patch_node(name, [{"op": "add", "path": "/spec/taints", "value": [OTHER]}])
    assert asyncio.run(change_taints(kube, empty, add=PENDING_TAINT))
    assert taint_keys(env, name) == [OTHER["key"], PENDING_TAINT.key]


def test_the_writer_sends_at_most_sixteen_at_once_and_each_node_once(env: PitstopEnv) -> None:
    names = add_nodes_at_once(env, 48)
    kube = CountingKube(client.ApiClient(env.api.configuration))

    async def scenario() -> tuple[int, int]:
        writer = PendingTaintWriter(kube)
        views = [node_view_from_object(await read_node_raw(kube, name)) for name in names]
        changes = [TaintChange(view, add=PENDING_TAINT) for view in views]
        started = writer.submit(changes)
        again = writer.submit(changes)  # the next pass, while they are in flight
        await writer.wait()
        # The pass after that, with the same (lagging) views: nothing is written twice.
        lagging = writer.submit(changes)
        await writer.wait()
        return started, again + lagging

    started, repeated = asyncio.run(scenario())
    assert (started, repeated) == (48, 0)
    assert kube.requests.get("patch nodes") == 48
    assert 1 < kube.most_in_flight <= CONCURRENT_WRITES, kube.most_in_flight
    assert all(PENDING_TAINT.key in taint_keys(env, name) for name in names)


@contextmanager
def recorder(env: PitstopEnv, names: set[str]) -> Iterator[dict[str, Any]]:
    """Watch the lock and the test's Nodes: the resourceVersion at which the lock first holds
    a lease, and at which each node first shows the pending taint (etcd revisions of one
    control plane: their order is the order of the writes)."""
    seen: dict[str, Any] = {"lock": None, "taints": {}}
    stop = threading.Event()

    def lock_watch() -> None:
        stream = watch.Watch()
        for event in stream.stream(
            env.core.list_namespaced_config_map,
            env.namespace,
            field_selector="metadata.name=pitstop-lock",
            timeout_seconds=300,
        ):
            item = event["object"]
            state = json.loads((item.data or {}).get("state.json") or "{}")
            if state.get("nodes") and seen["lock"] is None:
                seen["lock"] = int(item.metadata.resource_version)
                seen["lock_at"] = time.monotonic()
            if stop.is_set():
                return

    def node_watch() -> None:
        stream = watch.Watch()
        for event in stream.stream(
            env.core.list_node, label_selector=f"{TEST_LABEL}={env.run}", timeout_seconds=300
        ):
            node = event["object"]
            keys = {taint.key for taint in node.spec.taints or []}
            name = node.metadata.name
            if name in names and PENDING_TAINT.key in keys and name not in seen["taints"]:
                seen["taints"][name] = int(node.metadata.resource_version)
                seen["last_taint_at"] = time.monotonic()
            if stop.is_set():
                return

    def quietly(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception:
                if not stop.is_set():  # the control plane stopping ends the stream: no news
                    raise

        return run

    threads = [
        threading.Thread(target=quietly(target), daemon=True) for target in (lock_watch, node_watch)
    ]
    for thread in threads:
        thread.start()
    try:
        yield seen
    finally:
        stop.set()


def brain_requests(log_text: str) -> dict[str, int]:
    """The request counts (by verb and resource) the brain logs when it stops."""
    marker = "API requests of the brain's client, by verb and resource: "
    line = next(line for line in log_text.splitlines() if marker in line)
    counts: dict[str, int] = ast.literal_eval(line.split(marker, 1)[1].strip())
    return counts


def test_two_hundred_flagged_nodes_get_their_taint_after_the_first_admission(
    env: PitstopEnv,
) -> None:
    names = add_nodes_at_once(env, 220)
    env.flag(names)
    window = env.window("taints", {"maxUnavailable": 1, "countUnhealthy": False})
    with recorder(env, set(names)) as seen:
        started = time.monotonic()
        brain = env.start_brain()
        env.wait(lambda: seen["lock"] is not None, "the first admission", 120)
        [admitted] = env.lock()["nodes"]
        waiting = set(names) - {admitted}
        env.wait(
            lambda: waiting <= set(seen["taints"]),
            "the pending taint on every waiting node",
            120,
            explain=lambda: f"{len(waiting - set(seen['taints']))} without it",
        )
        elapsed = time.monotonic() - started
        # The status counts every waiting node and lists only the next ones (issue 18).
        status = env.wait(
            lambda: (
                (found := env.get_window(window).get("status", {})).get("counts", {}).get("pending")
                == len(waiting)
                and found
            ),
            "the status to count every waiting node",
            60,
        )
        brain.stop()
    print(
        f"\n220 flagged nodes: brain start to first admission {seen['lock_at'] - started:.1f} s,"
        f" to the last of {len(waiting)} taints {elapsed:.1f} s"
        f" ({seen['last_taint_at'] - seen['lock_at']:.1f} s after the admission)"
    )
    # Admission first: the lock's write comes before every taint write.
    assert seen["lock"] < min(seen["taints"][name] for name in waiting), seen["lock"]
    assert admitted not in seen["taints"]
    listed = [entry for entry in status["nodes"] if entry["phase"] == "Pending"]
    assert len(listed) == PENDING_NODES_SHOWN, status["nodes"]
    assert status["nodesNotListed"] == len(waiting) - PENDING_NODES_SHOWN
    assert status["counts"]["inMaintenance"] == 1 and status["counts"]["done"] == 0
    assert "rolloutStart" in status
    # One PATCH per waiting node (besides the admitted node's cordon): no 422 and retry.
    requests = brain_requests(brain.log_path.read_text())
    assert requests.get("get nodes", 0) <= 3, requests
    assert len(waiting) <= requests["patch nodes"] <= len(waiting) + 5, requests
