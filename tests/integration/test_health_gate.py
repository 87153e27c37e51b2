"""The health gate waits for the control plane: checked against the real one.

A rebooted node reports Ready before the node lifecycle controller (in the real
kube-controller-manager here) has seen it so: the controller's `node.kubernetes.io/not-ready`
taints stay until its next pass (every 5 s by default). Uncordoned meanwhile, the node gets the
next drain's pods, which the controller may then mark NotReady. The brain must uncordon only
once those taints are gone, so no pod is bound to the node while it carries them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from kubernetes import client

from localcluster.hosts import HostBehaviour
from localcluster.nodes import (
    boot_id,
    create_deployment,
    create_namespace,
    create_nodes,
    running_pods,
)
from localcluster.observe import NodeHistory, PodBindings
from pitstop import contract
from tests.integration.pitstop_env import TEST_LABEL, PitstopEnv, done_nodes

# Down for longer than the controller's monitor period (5 s): it sees every reboot and taints.
DOWN_SECONDS = 7.0
WAITING_MESSAGE = "waiting for the control plane to clear not-ready"


def pod_events(env: PitstopEnv, namespace: str) -> dict[str, int]:
    """The pod Events that tell of pods on a node the control plane saw as not ready."""
    counts = {"Cancelling deletion": 0, "NodeNotReady": 0}
    for event in env.core.list_namespaced_event(namespace).items:
        if event.reason == "TaintManagerEviction" and "Cancelling deletion" in event.message:
            counts["Cancelling deletion"] += event.count or 1
        if event.reason == "NodeNotReady":
            counts["NodeNotReady"] += event.count or 1
    return counts


def test_a_rebooted_node_is_uncordoned_only_once_the_control_plane_cleared_not_ready(
    env: PitstopEnv,
) -> None:
    # Three nodes in a zone of their own, one in maintenance at a time: the controller keeps
    # the zone "normal" (it taints differently in a zone it sees mostly down) and has its
    # per-zone tainting rate (one node every 10 s) to itself.
    zone = f"zone-gate-{env.run}"
    nodes = [f"{env.run}-n{index}" for index in range(3)]
    create_nodes(env.api, nodes, labels={TEST_LABEL: env.run}, zone=zone)
    env.nodes.extend(nodes)
    env.zones.update(dict.fromkeys(nodes, zone))
    workload = create_namespace(env.api)
    create_deployment(
        env.api,
        workload,
        "web",
        replicas=6,
        node_selector={TEST_LABEL: env.run},
        pdb_max_unavailable=1,
    )
    env.wait(lambda: len(running_pods(env.api, workload, "app=web")) == 6, "web pods")
    boots_before = {name: boot_id(env.api, name) for name in nodes}
    window = env.window("gate", {"maxUnavailable": 1, "drain": {"timeout": "60s"}})
    host = HostBehaviour(delay_seconds=0.5, down_seconds=DOWN_SECONDS)
    with (
        NodeHistory(env.api, label_selector=f"{TEST_LABEL}={env.run}") as history,
        PodBindings(env.api, workload) as bindings,
        env.observer() as observer,
        env.hosts(default=host) as hosts,
    ):
        time.sleep(1)  # the watches have listed
        env.start_brain()
        env.flag(nodes)
        env.wait(
            lambda: done_nodes(env, window) == set(nodes),
            "all three nodes Done",
            180,
            explain=lambda: env.workload_report(workload),
        )
        time.sleep(1)  # the watches catch up
    assert sorted(record.node for record in hosts.reboots) == sorted(nodes)

    def returned(name: str) -> float:
        """When the node was first seen Ready with its new boot ID."""
        return next(
            version.at
            for version in history.of(name)
            if version.ready and version.boot_id not in ("", boots_before[name])
        )

    # Not vacuous: the real controller did taint nodes that were already back.
    tainted_when_back = {
        version.name
        for version in history.versions
        if version.ready
        and version.boot_id not in ("", boots_before[version.name])
        and version.not_ready_taints
    }
    assert tainted_when_back, "the controller never tainted a returned node: nothing was tested"

    # No version of any node was schedulable while carrying the controller's taints.
    schedulable_and_tainted = [
        version
        for version in history.versions
        if not version.unschedulable and version.not_ready_taints
    ]
    story = {
        name: [
            (round(version.at - returned(name), 2), version.unschedulable, version.not_ready_taints)
            for version in history.of(name)
            if version.at >= returned(name) - 0.5
        ][:12]
        for name in nodes
    }
    assert not schedulable_and_tainted, (
        f"uncordoned while the control plane still marked it not ready: {schedulable_and_tainted}"
        f"; each node after its return (seconds, unschedulable, taints): {story}"
    )
    # And no pod was bound to a node while it carried them.
    bound_while_tainted = [
        binding
        for binding in bindings.bindings
        if (state := history.at(binding.node, binding.at)) is not None and state.not_ready_taints
    ]
    assert not bound_while_tainted, f"pods bound to a not-ready node: {bound_while_tainted}"
    for name in nodes:
        uncordoned = next(
            version.at
            for version in history.of(name)
            if version.at >= returned(name) and not version.unschedulable
        )
        last_tainted = max(
            (version.at for version in history.of(name) if version.not_ready_taints),
            default=0.0,
        )
        assert uncordoned > last_tainted, name
    # The wait was told in the lock (the window's status.nodes and `pitstop plan` show it).
    told = {
        name
        for snapshot in observer.snapshots
        for name, lease in snapshot.leases.items()
        if str(lease.get("message", "")).startswith(WAITING_MESSAGE)
    }
    assert told & tainted_when_back, f"the wait was never told; tainted nodes: {tainted_when_back}"
    print(
        f"\npod events in the workload: {pod_events(env, workload)}; tainted: {tainted_when_back}"
    )


# A taint of the control plane's kind the controller itself never removes (its passes remove
# only the NoSchedule and NoExecute ones), so the test decides how long it stays.
HELD_TAINT = {"key": contract.NOT_READY_TAINT_KEY, "effect": "PreferNoSchedule"}
HOLD_SECONDS = 6.0


def pitstop_plan(env: PitstopEnv) -> str:
    script = Path(sys.executable).with_name("pitstop")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "pitstopctl.main"]
    return subprocess.run(
        [*command, "plan", "--kubeconfig", str(env.plane.kubeconfig), "--namespace", env.namespace],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def remove_taint(env: PitstopEnv, node: str, key: str, effect: str) -> bool:
    """Remove one taint by its index, guarded by a `test` (the brain patches taints too)."""
    taints = env.node(node).spec.taints or []
    index = next(i for i, t in enumerate(taints) if (t.key, t.effect) == (key, effect))
    try:
        env.core.patch_node(
            node,
            [
                {"op": "test", "path": f"/spec/taints/{index}/effect", "value": effect},
                {"op": "test", "path": f"/spec/taints/{index}/key", "value": key},
                {"op": "remove", "path": f"/spec/taints/{index}"},
            ],
        )
    except client.exceptions.ApiException:
        return False
    return True


def test_the_wait_for_not_ready_to_clear_is_shown_and_holds_the_uncordon(env: PitstopEnv) -> None:
    """Any effect holds the node; the wait shows in the window's status and in `pitstop plan`."""
    (node,) = env.add_nodes(1)
    boot_before = boot_id(env.api, node)
    window = env.window("held", {"maxUnavailable": 1, "drain": {"timeout": "30s"}})
    with (
        NodeHistory(env.api, label_selector=f"{TEST_LABEL}={env.run}") as history,
        env.hosts(default=HostBehaviour(delay_seconds=0.5, down_seconds=1.0)),
    ):
        env.start_brain()
        env.flag([node])
        # As the node lifecycle controller does when it sees the node down: tainted while away.
        env.wait(lambda: env.node(node).spec.unschedulable, "the node cordoned")
        env.core.patch_node(node, [{"op": "add", "path": "/spec/taints/-", "value": HELD_TAINT}])
        env.wait(
            lambda: (
                (n := env.node(node)).status.node_info.boot_id != boot_before
                and any(c.type == "Ready" and c.status == "True" for c in n.status.conditions)
            ),
            "the node back with a new boot ID",
        )
        returned = time.monotonic()

        def status_message() -> str:
            for entry in env.get_window(window).get("status", {}).get("nodes", []):
                if entry["name"] == node and WAITING_MESSAGE in entry.get("message", ""):
                    return str(entry["message"])
            return ""

        shown = env.wait(status_message, "the wait in the window's status", HOLD_SECONDS - 1)
        plan = pitstop_plan(env)
        assert env.node(node).spec.unschedulable, "uncordoned while the taint is still there"
        time.sleep(max(0.0, returned + HOLD_SECONDS - time.monotonic()))
        removed_from = time.monotonic()
        env.wait(
            lambda: remove_taint(env, node, HELD_TAINT["key"], HELD_TAINT["effect"]), "removed"
        )
        env.wait(lambda: done_nodes(env, window) == {node}, "the node Done", 30)
        time.sleep(0.5)
    assert shown == f"{WAITING_MESSAGE} ({HELD_TAINT['key']})", shown
    assert "HealthCheck since" in plan and WAITING_MESSAGE in plan, plan
    # Ordered by the Node's own versions (the watch's order), not by when the test's patch call
    # returned: the brain's uncordon can be seen a moment before that call comes back.
    held = f"{HELD_TAINT['key']}:{HELD_TAINT['effect']}"
    since_return = [version for version in history.of(node) if version.at >= returned]
    taint_gone = next(
        i for i, version in enumerate(since_return) if held not in version.not_ready_taints
    )
    uncordon = next(i for i, version in enumerate(since_return) if not version.unschedulable)
    assert uncordon > taint_gone, "uncordoned before the taint was removed"
    assert since_return[taint_gone].at >= removed_from, since_return
    # Woken by the Node watch, not by the 5 s poll (a weak check: a poll may fall early).
    waited = since_return[uncordon].at - since_return[taint_gone].at
    assert waited < 2.5, "the removal did not wake the brain: it waited for a poll"


def test_a_node_the_control_plane_keeps_not_ready_fails_at_the_gate_timeout(
    env: PitstopEnv,
) -> None:
    (node,) = env.add_nodes(1)
    window = env.window(
        "stuck",
        {"maxUnavailable": 1, "reboot": {"healthGate": {"timeout": "5s"}}},
    )
    with env.hosts(default=HostBehaviour(delay_seconds=0.5, down_seconds=1.0)):
        env.start_brain()
        env.flag([node])
        env.wait(lambda: env.node(node).spec.unschedulable, "the node cordoned")
        env.core.patch_node(node, [{"op": "add", "path": "/spec/taints/-", "value": HELD_TAINT}])
        lease = env.wait(
            lambda: (
                (env.lock().get("nodes") or {}).get(node, {}).get("phase") == "Failed"
                and env.lock()["nodes"][node]
            ),
            "the node Failed",
            60,
        )
    assert lease["message"] == (
        f"health gate not passed in time: {WAITING_MESSAGE} ({HELD_TAINT['key']})"
    )
    assert env.node(node).spec.unschedulable, "a node that failed its gate stays cordoned"
    env.wait_condition(window, "Degraded", "True", 20)
