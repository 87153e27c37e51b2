"""The brain when things go wrong around it: a status that tells the truth while a node rests, a
deleted lock, junk in the lock, and one window's record that must not break another window.

Real brain processes, kwok nodes and simulated hosts (see test_brain_flow.py)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes import client

from brain.core.lock_state import LOCK_DATA_KEY
from localcluster.hosts import HostBehaviour, HostSimulator
from localcluster.nodes import create_bare_pod, create_namespace
from tests.integration.pitstop_env import PitstopEnv
from tests.integration.test_cli_plan import run_plan

pytestmark = pytest.mark.cluster
QUICK_DRAIN = {"timeout": "30s"}


def window_event_reasons(env: PitstopEnv, window: str) -> list[str]:
    events = env.core.list_namespaced_event(
        "default",
        field_selector=f"involvedObject.kind=NodesMaintenanceWindow,involvedObject.name={window}",
    ).items
    return [event.reason for event in events]


def progressing(env: PitstopEnv, window: str) -> tuple[str, str]:
    condition = env.condition(window, "Progressing")
    return condition.get("reason", ""), condition.get("message", "")


def in_lock(env: PitstopEnv, phase: str) -> list[str]:
    return sorted(
        name for name, lease in env.lock().get("nodes", {}).items() if lease["phase"] == phase
    )


def all_finished(env: PitstopEnv, nodes: list[str], reboots: list[str]) -> bool:
    """Every node rebooted, released by the lock, uncordoned and unmarked."""
    if sorted(set(reboots)) != sorted(nodes) or env.lock().get("nodes"):
        return False
    for name in nodes:
        node = env.node(name)
        if node.spec.unschedulable or "pitstop.dev/window" in (node.metadata.annotations or {}):
            return False
    return True


# --- A refused drain: the status says the node waits (issue 16 item 3). ------------------------


def test_a_node_resting_after_a_refused_drain_is_pending_and_the_rollout_not_complete(
    env: PitstopEnv,
) -> None:
    nodes = env.add_nodes(1, zones=1)
    workload = create_namespace(env.api)
    create_bare_pod(env.api, workload, "lonely", nodes[0])  # refused without drain.force
    env.flag(nodes)
    # The node rests for drain.timeout after the aborted drain.
    window = env.window("refused", {"maxUnavailable": 1, "drain": {"timeout": "25s"}})
    with env.hosts() as hosts:
        env.start_brain()
        env.wait(
            lambda: any(
                entry["result"] == "DrainAborted"
                for entry in env.lock().get("windows", {}).get(window, {}).get("completed", [])
            ),
            "the refused drain to be aborted",
            40,
        )
        # The node rests before its retry: status and conditions say it waits.
        env.wait(
            lambda: progressing(env, window)[0] == "Resting",
            "Progressing reason Resting",
            15,
            explain=lambda: json.dumps(env.get_window(window).get("status"), indent=1),
        )
        status = env.get_window(window)["status"]
        assert status["counts"]["pending"] == 1, status
        assert nodes[0] in progressing(env, window)[1] and "until" in progressing(env, window)[1]
        header, row = env.plane.kubectl("get", "nmw", window).stdout.splitlines()[:2]
        columns = dict(zip(header.split(), row.split(), strict=False))
        assert columns["PENDING"] == "1", columns
        time.sleep(3)
        assert "RolloutComplete" not in window_event_reasons(env, window)
        # The bare pod goes; after its rest the node is drained and rebooted: now it is done.
        env.core.delete_namespaced_pod("lonely", workload, grace_period_seconds=0)
        env.wait(
            lambda: all_finished(env, nodes, [record.node for record in hosts.reboots]),
            "the node to be rebooted after its rest",
            90,
        )
        env.wait(
            lambda: "RolloutComplete" in window_event_reasons(env, window),
            "RolloutComplete once truly done",
            20,
        )
    assert progressing(env, window)[0] == "Idle"
    assert window_event_reasons(env, window).count("RolloutComplete") == 1
    client.CoreV1Api(env.api).delete_namespace(workload)


# --- A deleted lock is rebuilt from the cluster (issue 16 item 6). -----------------------------


@pytest.mark.parametrize("restart", [False, True], ids=["running-brain", "brain-restarted"])
def test_a_lock_deleted_mid_rollout_is_rebuilt_and_every_node_finishes(
    env: PitstopEnv, restart: bool
) -> None:
    nodes = env.add_nodes(4, zones=1)
    env.flag(nodes)
    window = env.window("rebuild", {"maxUnavailable": 2, "drain": QUICK_DRAIN})
    # Hosts that take a while to go down: the first two nodes wait in WaitingForNode.
    slow = HostBehaviour(delay_seconds=8.0, down_seconds=2.0)
    with env.observer() as observer, env.hosts(default=slow) as hosts:
        brain = env.start_brain()
        waiting = env.wait(
            lambda: len(in_lock(env, "WaitingForNode")) == 2 and in_lock(env, "WaitingForNode"),
            "two nodes WaitingForNode",
            60,
        )
        if restart:
            brain.kill()
        env.core.delete_namespaced_config_map("pitstop-lock", env.namespace)
        if restart:
            # The hosts reboot while no brain runs; then a brain starts without a lock.
            env.wait(lambda: len(hosts.reboots) == 2, "the two hosts to reboot", 30)
            brain.start()
        env.wait(
            lambda: all_finished(env, nodes, [record.node for record in hosts.reboots]),
            "every node to finish, uncordoned and unmarked",
            150,
            explain=lambda: json.dumps(env.lock(), indent=1),
        )
    assert sorted(record.node for record in hosts.reboots) == sorted(nodes), "a node rebooted twice"
    assert observer.peak() <= 2
    assert "LockRebuilt" in window_event_reasons(env, window)
    log = brain.log_path.read_text()
    assert all(name in log for name in waiting)
    assert "rebuilt from the nodes' marks" in log


# --- Junk in the lock (issue 16 item 7). --------------------------------------------------------


def test_junk_in_the_lock_degrades_the_window_without_a_hot_loop_and_recovers(
    env: PitstopEnv,
) -> None:
    nodes = env.add_nodes(3, zones=1)
    env.flag(nodes)
    window = env.window("junk", {"maxUnavailable": 1, "drain": QUICK_DRAIN})
    slow = HostBehaviour(delay_seconds=4.0, down_seconds=1.0)
    junk = "this is not the lock {"
    with env.hosts(default=slow) as hosts:
        brain = env.start_brain()
        env.wait(lambda: in_lock(env, "WaitingForNode"), "a node WaitingForNode", 60)
        stored = env.core.read_namespaced_config_map("pitstop-lock", env.namespace)
        saved = stored.data[LOCK_DATA_KEY]
        env.core.patch_namespaced_config_map(
            "pitstop-lock", env.namespace, {"data": {LOCK_DATA_KEY: junk}}
        )
        junk_at = len(brain.log_path.read_text().splitlines())
        degraded = env.wait_condition(window, "Degraded", "True", 40)
        assert degraded["reason"] == "LockUnreadable", degraded
        assert f"{env.namespace}/pitstop-lock" in degraded["message"]
        assert "does not parse" in degraded["message"] and "\n" not in degraded["message"]
        assert progressing(env, window)[0] == "LockUnreadable"
        time.sleep(20)
        # Untouched, one Event, and a few log lines (one per back-off), no tracebacks.
        stored = env.core.read_namespaced_config_map("pitstop-lock", env.namespace)
        assert stored.data[LOCK_DATA_KEY] == junk
        assert window_event_reasons(env, window).count("Degraded") == 1
        since_junk = brain.log_path.read_text().splitlines()[junk_at:]
        assert not any("Traceback" in line for line in since_junk), "\n".join(since_junk)
        unreadable_lines = [line for line in since_junk if "does not parse" in line]
        assert 1 <= len(unreadable_lines) <= 8, "\n".join(unreadable_lines)
        assert not any("node step failed" in line for line in since_junk)
        # Fixed: the brain recovers and the rollout goes on.
        env.core.patch_namespaced_config_map(
            "pitstop-lock", env.namespace, {"data": {LOCK_DATA_KEY: saved}}
        )
        env.wait_condition(window, "Degraded", "False", 60)
        env.wait(
            lambda: all_finished(env, nodes, [record.node for record in hosts.reboots]),
            "the rollout to finish",
            120,
        )
    assert "Recovered" in window_event_reasons(env, window)


# --- One window never breaks another (issue 24). ------------------------------------------------


def beside_a_fine_window(
    env: PitstopEnv, pool: str, spec: dict[str, Any]
) -> tuple[list[str], list[str], str]:
    """A flagged node under window `pool` (priority 10, `spec`, selecting it by label) and one
    under a plain "fine" window: the fine nodes, the pool's nodes and the pool's window."""
    fine_nodes = env.add_nodes(1, zones=1)
    pool_nodes = env.add_nodes(1, zones=1)
    env.flag(fine_nodes + pool_nodes)
    for name in pool_nodes:
        env.core.patch_node(name, {"metadata": {"labels": {"pitstop-test/pool": pool}}})
    window = env.window(
        pool,
        {"priority": 10, "nodeSelector": {"matchLabels": {"pitstop-test/pool": pool}}, **spec},
    )
    env.window("fine", {"maxUnavailable": 1, "drain": QUICK_DRAIN})
    return fine_nodes, pool_nodes, window


def wait_fine_rebooted(env: PitstopEnv, hosts: HostSimulator, fine_nodes: list[str]) -> None:
    env.wait(
        lambda: all_finished(env, fine_nodes, [record.node for record in hosts.reboots]),
        "the fine window's node to be rebooted",
        90,
    )


def test_one_windows_record_cannot_break_another_window_or_pitstop_plan(env: PitstopEnv) -> None:
    # A lock whose record of the "stuck" window has a far-future last finish: adding its
    # delayBetweenNodes overflowed, and every pass of every window failed.
    fine_nodes, _, stuck = beside_a_fine_window(
        env, "stuck", {"reboot": {"delayBetweenNodes": "2h"}}
    )
    state = {
        "version": 1,
        "nodes": {},
        "windows": {stuck: {"lastFinished": "9999-12-31T23:00:00Z"}},
    }
    env.core.create_namespaced_config_map(
        env.namespace,
        {"metadata": {"name": "pitstop-lock"}, "data": {LOCK_DATA_KEY: json.dumps(state)}},
    )
    with env.hosts() as hosts:
        env.start_brain()
        wait_fine_rebooted(env, hosts, fine_nodes)
        time.sleep(2)
        assert [record.node for record in hosts.reboots] == fine_nodes
    result = run_plan(env.plane.kubeconfig, env.namespace)
    assert result.returncode == 0, result.stderr
    stuck_block = result.stdout.split(f"Window {stuck} ")[1].split("\nWindow ")[0]
    assert "delayBetweenNodes until 9999-12-31T23:59:59Z" in stuck_block
    assert "waits: DelayBetweenNodes" in stuck_block


def test_a_window_the_planner_fails_on_is_degraded_and_the_others_go_on(env: PitstopEnv) -> None:
    # A valid spec the schedule cannot compute: a one-off at the end of year 9999 seen from a
    # time zone ahead of UTC overflows (OverflowError) when planning this window.
    overflowing = {
        "timeZone": "Pacific/Kiritimati",
        "oneOff": [{"start": "9999-12-31T20:00:00Z", "end": "9999-12-31T23:59:59Z"}],
    }
    fine_nodes, odd_nodes, odd = beside_a_fine_window(env, "odd", {"schedule": overflowing})
    with env.hosts() as hosts:
        env.start_brain()
        wait_fine_rebooted(env, hosts, fine_nodes)
        degraded = env.wait_condition(odd, "Degraded", "True", 30)
        assert degraded["reason"] == "PlanFailed" and "OverflowError" in degraded["message"]
        time.sleep(3)
        assert [record.node for record in hosts.reboots] == fine_nodes
        assert not env.node(odd_nodes[0]).spec.unschedulable
    assert window_event_reasons(env, odd).count("Degraded") == 1
    result = run_plan(env.plane.kubeconfig, env.namespace)
    assert result.returncode == 0, result.stderr
    failed_block = result.stdout.split("Windows the planner failed on")[1]
    assert f"{odd}: OverflowError" in failed_block
