"""The brain's Node watch against a real API server: paged list, watch, reconnect.

(The relist on 410 Gone is played in tests/brain/test_node_watch_protocol.py: the API server's
watch cache serves old resourceVersions for minutes, too long for a test here.)

What matters at scale: a kubelet's status update (a heartbeat, a condition's timestamp) leaves
the NodeView equal and wakes nothing; a change the planner sees wakes the window tasks.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from kubernetes import client

from brain.core.node_view import NodeView
from brain.node_watch import NodeWatch
from localcluster.nodes import create_nodes, delete_nodes

pytestmark = pytest.mark.cluster


async def _until(check: Callable[[], object], what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _quiet(wakes: list[float], seconds: float = 1.0) -> None:
    """Until no wake-up came for `seconds` (the control plane settles new nodes' taints)."""
    await _until(lambda: time.monotonic() - max(wakes) > seconds, "a quiet moment", 30.0)


def test_node_watch_keeps_views_and_wakes_only_on_changes(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    run = uuid.uuid4().hex[:6]
    names = create_nodes(api_client, [f"watch-{run}-{index}" for index in range(5)])
    try:
        asyncio.run(_scenario(api_client, core, names))
    finally:
        delete_nodes(api_client, names)


async def _scenario(api_client: client.ApiClient, core: client.CoreV1Api, names: list[str]) -> None:
    wakes: list[float] = []
    # Pages of 2: five nodes (and whatever else the cluster has) take several pages.
    watch = NodeWatch(api_client, on_change=lambda: wakes.append(time.monotonic()), page_size=2)
    watch.start()
    try:
        await asyncio.wait_for(watch.synced.wait(), 20)
        assert set(names) <= set(watch.views)
        assert all(isinstance(view, NodeView) for view in watch.views.values())
        assert watch.views[names[0]].ready
        assert watch.lists == 1
        assert len(wakes) == 1  # the first list: one wake-up, not one per node

        # A heartbeat: the Ready condition's timestamps move, the view does not.
        await _quiet(wakes)
        before = watch.views[names[0]]
        wakes_before = len(wakes)
        node = core.read_node(names[0])
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        conditions = [
            {
                "type": condition.type,
                "status": condition.status,
                "reason": condition.reason,
                "message": condition.message,
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": condition.last_transition_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            for condition in node.status.conditions
        ]
        patched = core.patch_node_status(names[0], {"status": {"conditions": conditions}})
        heartbeat_version = int(patched.metadata.resource_version)
        await _until(
            lambda: int(watch.resource_version or 0) >= heartbeat_version, "the heartbeat's event"
        )
        assert watch.views[names[0]] is before
        assert len(wakes) == wakes_before

        # A label the planner reads: the view changes, the window tasks are woken.
        core.patch_node(names[1], {"metadata": {"labels": {"pitstop.dev/reboot-required": "true"}}})
        await _until(lambda: watch.views[names[1]].reboot_required, "the flag in the view")
        assert len(wakes) > wakes_before

        # Deleted: gone from the views.
        delete_nodes(api_client, [names[2]])
        await _until(lambda: names[2] not in watch.views, "the deletion")

        # Reconnected (the connection dropped): resumed from where it was, nothing missed.
        lists_before = watch.lists
        watch.resume_from(watch.resource_version)
        core.patch_node(names[3], {"metadata": {"labels": {"pitstop.dev/reboot-required": "true"}}})
        await _until(lambda: watch.views[names[3]].reboot_required, "the change after reconnecting")
        assert watch.lists == lists_before
        assert names[2] not in watch.views
        assert names[4] in watch.views
    finally:
        started = time.monotonic()
        await watch.stop()
        assert time.monotonic() - started < 5
