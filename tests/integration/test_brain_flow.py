"""The brain's reboot flow end to end: a real brain process, kwok nodes, simulated hosts."""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

from kubernetes import client

from localcluster.hosts import HostBehaviour
from localcluster.nodes import create_deployment, create_namespace, create_pdb, running_pods
from tests.brain.loopback import Reply, loopback_server
from tests.integration.pitstop_env import PitstopEnv, done_nodes

QUICK_DRAIN = {"timeout": "30s"}


def test_rolling_reboot_respects_budget_zones_pdbs_and_precordoned_nodes(
    env: PitstopEnv,
) -> None:
    nodes = env.add_nodes(6, zones=2)
    workload_namespace = env.web_workload(6)
    precordoned = nodes[5]
    env.core.patch_node(precordoned, {"spec": {"unschedulable": True}})
    env.flag(nodes)
    # countUnhealthy false: otherwise the node cordoned by "someone else" (and left cordoned
    # after its reboot, as it must be) holds its zone's only slot for good.
    window = env.window(
        "rolling",
        {
            "maxUnavailable": 2,
            "topology": {"key": "topology.kubernetes.io/zone", "maxUnavailable": 1},
            "countUnhealthy": False,
            "drain": QUICK_DRAIN,
        },
    )
    fewest_ready = [6]
    stop = threading.Event()

    def watch_pods() -> None:
        while not stop.is_set():
            pods = running_pods(env.api, workload_namespace, "app=web")
            ready = [p for p in pods if p.metadata.deletion_timestamp is None]
            fewest_ready[0] = min(fewest_ready[0], len(ready))
            time.sleep(0.05)

    sampler = threading.Thread(target=watch_pods, daemon=True)
    with env.observer() as observer, env.hosts(jitter_seconds=0.5) as hosts:
        sampler.start()
        try:
            env.start_brain()
            env.wait(
                lambda: done_nodes(env, window) == set(nodes),
                "all six nodes Done",
                150,
                explain=lambda: env.workload_report(workload_namespace),
            )
        finally:
            stop.set()
            sampler.join()
    assert sorted(record.node for record in hosts.reboots) == sorted(nodes)
    assert observer.peak() <= 2
    assert observer.peak() == 2, "the budget was never used in full: not a rolling test"
    assert observer.peak_per_zone() == 1
    # A PDB with maxUnavailable 1 over 6 replicas: at most one pod away at any moment.
    assert fewest_ready[0] >= 5
    for name in nodes:
        node = env.node(name)
        assert bool(node.spec.unschedulable) == (name == precordoned), name
        assert not any(t.key.startswith("pitstop.dev/") for t in node.spec.taints or [])
        assert "pitstop.dev/window" not in (node.metadata.annotations or {})
    assert env.lock().get("nodes") == {}
    status = env.get_window(window)["status"]
    assert status["counts"]["done"] == 6 and status["counts"]["inMaintenance"] == 0

    # The window tells the story by its status (per-node phases) and its conditions' Events;
    # each Node by one Event per step that matters.
    # RolloutComplete is posted just after the status write that shows every node Done: wait
    # for it (a few seconds at most) rather than read once. It once never came: the status plan
    # showed the last node Pending for a pass (see test_planner's resting-node tests).
    def described_once_complete() -> str:
        text = env.plane.kubectl("describe", "nmw", window).stdout
        return text if "RolloutComplete" in text else ""

    described = env.wait(described_once_complete, "the window's RolloutComplete Event", 20)
    assert "Rebooted" in described and "WindowOpened" in described

    def brain_reasons(name: str) -> list[str]:
        events = env.core.list_namespaced_event(
            "default", field_selector=f"involvedObject.kind=Node,involvedObject.name={name}"
        ).items
        return sorted(event.reason for event in events if event.source.component == "pitstop-brain")

    for name in nodes:
        env.wait(lambda name=name: "Rebooted" in brain_reasons(name), f"{name}'s Rebooted Event")
        assert brain_reasons(name) == ["Rebooted", "Started"], name
    client.CoreV1Api(env.api).delete_namespace(workload_namespace)


def test_closed_window_starts_nothing_and_closing_lets_in_flight_nodes_finish(
    env: PitstopEnv,
) -> None:
    nodes = env.add_nodes(4, zones=1)
    env.flag(nodes)
    closed = {
        "schedule": {"oneOff": [{"start": "2099-01-01T00:00:00Z", "end": "2099-01-02T00:00:00Z"}]}
    }
    window = env.window("sched", {"maxUnavailable": 1, "drain": QUICK_DRAIN, **closed})
    slow = HostBehaviour(delay_seconds=3.0, down_seconds=1.0)
    with env.observer() as observer, env.hosts(default=slow) as hosts:
        env.start_brain()
        env.wait(
            lambda: env.condition(window, "WindowOpen").get("status") == "False", "WindowOpen False"
        )
        time.sleep(3)
        assert env.lock().get("nodes", {}) == {} and env.jobs() == []
        pending = env.node(nodes[0]).spec.taints or []
        assert any(t.key == "pitstop.dev/reboot-pending" for t in pending)
        # Open it: the first node starts.
        env.patch_window(window, {"spec": {"schedule": {"oneOff": None}}})
        first = env.wait(lambda: observer.ever_in_maintenance(), "a node to start", 30)
        # Close it again while that node is in flight: it finishes, no other node starts.
        env.patch_window(window, {"spec": closed})
        env.wait(
            lambda: len(hosts.reboots) >= 1 and not env.lock().get("nodes"),
            "the in-flight node to finish",
            60,
        )
        time.sleep(4)
        assert observer.ever_in_maintenance() == first
        assert len(env.jobs()) == 1
        # suspend: open schedule but suspended -> nothing starts; resume -> the rest go.
        env.patch_window(window, {"spec": {"suspend": True, "schedule": {"oneOff": None}}})
        env.wait(
            lambda: env.condition(window, "WindowOpen").get("reason") == "Suspended", "Suspended"
        )
        time.sleep(3)
        assert len(env.jobs()) == 1
        env.patch_window(window, {"spec": {"suspend": False}})
        env.wait(
            lambda: len(hosts.reboots) == 4 and not env.lock().get("nodes"),
            "the other three nodes",
            90,
        )
    assert observer.peak() == 1


def test_node_that_never_returns_fails_keeps_its_slot_and_retry_resumes(
    env: PitstopEnv,
) -> None:
    nodes = env.add_nodes(3, zones=1)
    env.flag(nodes)
    window = env.window(
        "lost", {"maxUnavailable": 1, "drain": QUICK_DRAIN, "reboot": {"nodeReturnTimeout": "5s"}}
    )
    lost = nodes[0]
    behaviours = {lost: HostBehaviour(never_returns=True)}
    with env.hosts(behaviours=behaviours) as hosts:
        env.start_brain()
        env.wait(
            lambda: env.lock().get("nodes", {}).get(lost, {}).get("phase") == "Failed",
            "the lost node to be Failed",
            60,
        )
        degraded = env.wait_condition(window, "Degraded", "True")
        assert "did not come back" in degraded["message"]
        time.sleep(4)
        # The slot stays taken and the rollout is paused: nobody else started.
        assert list(env.lock()["nodes"]) == [lost]
        assert len(hosts.reboots) == 0 and len(env.jobs()) == 1
        # A person fixes the host and asks for a retry.
        behaviours[lost] = HostBehaviour()
        result = subprocess.run(
            [
                str(Path(sys.executable).with_name("pitstop")),
                "retry",
                lost,
                "--namespace",
                env.namespace,
            ],
            env=env.plane.environment(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "retry requested" in result.stdout
        env.wait(
            lambda: len(hosts.reboots) == 3 and not env.lock().get("nodes"),
            "the retried node and the rest",
            90,
        )
    assert env.condition(window, "Degraded")["status"] == "False"
    assert not env.node(lost).spec.unschedulable


def test_same_boot_id_after_the_job_fails_without_a_retry_loop(env: PitstopEnv) -> None:
    nodes = env.add_nodes(1, zones=1)
    env.flag(nodes)
    env.window("same", {"maxUnavailable": 1, "drain": QUICK_DRAIN})
    with env.hosts(behaviours={nodes[0]: HostBehaviour(same_boot_id=True)}) as hosts:
        env.start_brain()
        failed = env.wait(
            lambda: (
                env.lock().get("nodes", {}).get(nodes[0], {}).get("phase") == "Failed"
                and env.lock()["nodes"][nodes[0]]
            ),
            "Failed",
            60,
        )
        assert "same boot ID" in failed["message"]
        time.sleep(6)
        assert len(env.jobs()) == 1 and len(hosts.reboots) == 1
        assert env.lock()["nodes"][nodes[0]]["phase"] == "Failed"


def test_a_pdb_that_never_allows_aborts_the_drain_and_frees_the_slot(env: PitstopEnv) -> None:
    nodes = env.add_nodes(1, zones=1)
    workload_namespace = create_namespace(env.api)
    create_deployment(
        env.api,
        workload_namespace,
        "stuck",
        replicas=1,
        node_selector={"kubernetes.io/hostname": nodes[0]},
    )
    create_pdb(env.api, workload_namespace, "stuck", {"app": "stuck"}, min_available=1)
    env.wait(lambda: running_pods(env.api, workload_namespace, "app=stuck"), "stuck pod")
    env.flag(nodes)
    window = env.window(
        "abort", {"maxUnavailable": 1, "drain": {"timeout": "4s", "onTimeout": "Abort"}}
    )
    with env.hosts() as hosts:
        env.start_brain()
        env.wait(lambda: env.node(nodes[0]).spec.unschedulable, "cordon", 30)
        env.wait(
            lambda: any(
                entry["result"] == "DrainAborted"
                for entry in env.lock().get("windows", {}).get(window, {}).get("completed", [])
            ),
            "the drain to be aborted",
            40,
        )
        env.wait(lambda: not env.node(nodes[0]).spec.unschedulable, "uncordon", 10)
        assert env.lock().get("nodes") == {}
        assert hosts.reboots == [] and env.jobs() == []
    client.CoreV1Api(env.api).delete_namespace(workload_namespace)


def test_two_brains_never_exceed_the_budget(env: PitstopEnv) -> None:
    nodes = env.add_nodes(6, zones=2)
    env.flag(nodes)
    window = env.window("pair", {"maxUnavailable": 2, "drain": QUICK_DRAIN})
    with env.observer() as observer, env.hosts(jitter_seconds=0.5) as hosts:
        env.start_brain()
        env.start_brain()
        env.wait(lambda: done_nodes(env, window) == set(nodes), "all six nodes Done", 150)
    assert observer.peak() <= 2
    per_node = [record.node for record in hosts.reboots]
    assert sorted(per_node) == sorted(nodes), "a node was rebooted twice"


def test_brain_killed_at_any_moment_resumes_without_losing_or_repeating(
    env: PitstopEnv,
) -> None:
    with contextlib.ExitStack() as stack:
        killed_in_every_phase(env, stack)


def killed_in_every_phase(env: PitstopEnv, stack: contextlib.ExitStack) -> None:
    nodes = env.add_nodes(4, zones=2)
    env.flag(nodes)
    # A preDrain hook that takes a second to say yes keeps each node in Draining long enough to
    # be interrupted there (a PDB would too, but the disruption controller may then hold a
    # recreated pod as "disrupted" for two minutes).
    slow_hook = stack.enter_context(loopback_server(Reply(delay_seconds=1.0)))
    window = env.window(
        "crash",
        {
            "maxUnavailable": 2,
            "drain": QUICK_DRAIN,
            "hooks": {"preDrain": {"url": slow_hook.url, "timeout": "5s"}},
        },
    )
    phases_at_kill: set[str] = set()
    slow = HostBehaviour(delay_seconds=1.5, down_seconds=1.5)
    with env.observer() as observer, env.hosts(default=slow) as hosts:
        brain = env.start_brain()
        kills = 0
        targets = ["Draining", "WaitingForNode", "Rebooting", "HealthCheck"]
        # Kill the brain the moment the lock shows a node in the target phase (or a moment
        # after its next write): twelve crashes spread over the phases, then let it finish.
        while kills < 12 and done_nodes(env, window) != set(nodes):
            target = targets[kills % len(targets)]

            def in_target(target: str = target) -> bool:
                latest = observer.snapshots[-1] if observer.snapshots else None
                return latest is not None and any(
                    lease.get("phase") == target for lease in latest.leases.values()
                )

            deadline = time.monotonic() + 8
            while not in_target() and time.monotonic() < deadline:
                time.sleep(0.02)
            if not in_target():
                time.sleep(random.uniform(0.0, 0.5))
            latest = observer.snapshots[-1] if observer.snapshots else None
            if latest is not None:
                phases_at_kill.update(str(lease.get("phase")) for lease in latest.leases.values())
            brain.kill()
            kills += 1
            brain.start()
        env.wait(lambda: done_nodes(env, window) == set(nodes), "all nodes Done", 60)
    jobs_per_node: dict[str, int] = {}
    for job in env.jobs():
        node = job.metadata.labels["pitstop.dev/node"]
        jobs_per_node[node] = jobs_per_node.get(node, 0) + 1
    assert jobs_per_node == dict.fromkeys(nodes, 1), "a second Job for the same node and boot"
    assert sorted(record.node for record in hosts.reboots) == sorted(nodes)
    assert observer.peak() <= 2
    assert not any(env.node(name).spec.unschedulable for name in nodes)
    assert {"Draining", "WaitingForNode"} <= phases_at_kill, phases_at_kill
    print("phases the brain was killed in:", sorted(phases_at_kill), "kills:", kills)


def test_window_deleted_mid_rollout_lets_nodes_in_flight_finish(env: PitstopEnv) -> None:
    nodes = env.add_nodes(3, zones=1)
    env.flag(nodes)
    window = env.window("gone", {"maxUnavailable": 1, "drain": QUICK_DRAIN})
    slow = HostBehaviour(delay_seconds=3.0, down_seconds=1.0)
    with env.observer() as observer, env.hosts(default=slow) as hosts:
        env.start_brain()
        first = env.wait(lambda: observer.ever_in_maintenance(), "a node to start", 30)
        env.plane.kubectl("delete", "nmw", window, "--wait=false")
        env.wait(
            lambda: len(hosts.reboots) == 1 and not env.lock().get("nodes"),
            "the node in flight to finish",
            60,
        )
        time.sleep(3)
    assert observer.ever_in_maintenance() == first, "a node started after its window was gone"
    assert not env.node(sorted(first)[0]).spec.unschedulable
    env.wait(
        lambda: env.plane.kubectl("get", "nmw", window, check=False).returncode != 0,
        "the window (and its finalizer) to go",
        30,
    )


def test_a_node_deleted_in_flight_frees_its_slot(env: PitstopEnv) -> None:
    nodes = env.add_nodes(2, zones=1)
    env.flag(nodes)
    env.window("deleted", {"maxUnavailable": 1, "drain": QUICK_DRAIN})
    lost = nodes[0]
    with env.hosts(behaviours={lost: HostBehaviour(never_returns=True)}) as hosts:
        env.start_brain()
        env.wait(
            lambda: env.lock().get("nodes", {}).get(lost, {}).get("phase") == "WaitingForNode",
            "the first node to be rebooting",
            60,
        )
        env.core.delete_node(lost)
        env.wait(
            lambda: (
                len(hosts.reboots) == 1
                and hosts.reboots[0].node == nodes[1]
                and not env.lock().get("nodes")
            ),
            "the other node to take the slot",
            60,
        )
