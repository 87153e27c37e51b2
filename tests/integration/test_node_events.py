"""A node's Events read the way a person reads them: the real `kubectl describe node`.

kubectl sorts Events by time. The brain posted a node's Started and RebootStarted a fraction of
a second apart (an empty node drains at once); with whole-second timestamps `kubectl describe`
listed them in either order. A rebooted node's Events are now Started and Rebooted, seconds
apart; Started and the outcome still fall within one second when the drain is refused at once
(a pod without a controller): Started, then the DrainAborted warning.
"""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from localcluster.nodes import create_bare_pod, create_namespace
from tests.integration.pitstop_env import PitstopEnv

pytestmark = pytest.mark.cluster

STEPS = ["Started", "DrainAborted"]
NODES = 8
# A row of `kubectl describe`'s Events table: type, reason, age, from (the brain), message.
BRAIN_EVENT_ROW = re.compile(r"^\s+(?:Normal|Warning)\s+(\S+)\s+\S+\s+pitstop-brain\b")


def described_steps(env: PitstopEnv, node: str) -> list[str]:
    """The brain's Events on the node, in the order `kubectl describe node` lists them."""
    text = env.plane.kubectl("describe", "node", node).stdout
    _, _, events = text.partition("\nEvents:")
    return [
        match.group(1) for line in events.splitlines() if (match := BRAIN_EVENT_ROW.match(line))
    ]


def brain_event_times(env: PitstopEnv, node: str) -> list[datetime]:
    """When the brain posted its Events on the node (however the Event records it)."""
    events = env.core.list_namespaced_event(
        "default", field_selector=f"involvedObject.kind=Node,involvedObject.name={node}"
    ).items
    return [
        event.event_time or event.last_timestamp
        for event in events
        if "pitstop-brain" in (event.reporting_component, event.source and event.source.component)
    ]


def test_kubectl_describe_node_lists_the_steps_in_order_within_one_second(
    env: PitstopEnv,
) -> None:
    nodes = env.add_nodes(NODES, zones=2)
    workload = create_namespace(env.api)
    for node in nodes:  # without a controller: the drain refuses it, at once
        create_bare_pod(env.api, workload, f"bare-{node}", node)
    env.flag(nodes)
    env.window("events", {"maxUnavailable": 4, "drain": {"timeout": "30s"}})
    with env.hosts():
        env.start_brain()
        for node in nodes:
            env.wait(
                lambda node=node: len(brain_event_times(env, node)) == len(STEPS),
                f"{node}'s two Events",
                150,
            )
    described = {node: described_steps(env, node) for node in nodes}
    out_of_order = {node: steps for node, steps in described.items() if steps != STEPS}
    assert not out_of_order, f"kubectl describe node lists: {out_of_order}"
    # The order was tested where it was at stake: Events of one node within the same second.
    same_second = [
        node
        for node in nodes
        if len({moment.replace(microsecond=0) for moment in brain_event_times(env, node)})
        < len(STEPS)
    ]
    assert len(same_second) >= 2, "no node had two Events within one second: order untested"
