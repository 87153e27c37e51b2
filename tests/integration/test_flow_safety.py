"""Safety of the flow against other actors: never a drain or a reboot of an uncordoned node;
a person's release works in every phase; a person's action is acted on once, or refused.

Each test runs a real brain against the local control plane and samples what matters (the
Node's cordon at each eviction and at each reboot Job's creation) from watches of its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, watch

from localcluster.hosts import HostBehaviour, flag_node
from localcluster.nodes import create_deployment, create_namespace, create_pdb, running_pods
from pitstop import contract
from tests.brain.loopback import Reply, loopback_server
from tests.integration.pitstop_env import PitstopEnv


@dataclass
class Sample:
    what: str  # "eviction of <pod>" or "Job <name>"
    node: str
    cordoned: bool


@dataclass
class CordonSampler:
    """Reads the Node's cordon the moment a pod of `namespace` starts going away (an eviction)
    and the moment a reboot Job appears in `job_namespace`."""

    api: client.ApiClient
    namespace: str
    job_namespace: str
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)

    def __enter__(self) -> CordonSampler:
        for target in (self._pods, self._jobs):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _cordoned(self, node: str) -> bool:
        return bool(client.CoreV1Api(self.api).read_node(node).spec.unschedulable)

    def _record(self, uid: str, what: str, node: str) -> None:
        if uid in self._seen or not node:
            return
        self._seen.add(uid)
        self.samples.append(Sample(what, node, self._cordoned(node)))

    def _loop(self, list_call: Any, namespace: str, handle: Any) -> None:
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(list_call, namespace, timeout_seconds=2):
                    if self._stop.is_set():
                        break
                    handle(event["type"], event["object"])
            except Exception:
                time.sleep(0.2)
            finally:
                stream.stop()

    def _pods(self) -> None:
        def handle(kind: str, pod: Any) -> None:
            if kind == "DELETED" or pod.metadata.deletion_timestamp is not None:
                self._record(
                    pod.metadata.uid, f"eviction of {pod.metadata.name}", pod.spec.node_name
                )

        self._loop(client.CoreV1Api(self.api).list_namespaced_pod, self.namespace, handle)

    def _jobs(self) -> None:
        def handle(kind: str, job: Any) -> None:
            if kind == "ADDED":
                node = (job.metadata.labels or {}).get(contract.JOB_NODE_LABEL, "")
                self._record(job.metadata.uid, f"Job {job.metadata.name}", node)

        self._loop(client.BatchV1Api(self.api).list_namespaced_job, self.job_namespace, handle)

    def uncordoned(self) -> list[Sample]:
        return [sample for sample in self.samples if not sample.cordoned]

    def on(self, node: str) -> list[Sample]:
        return [sample for sample in self.samples if sample.node == node]


def pinned_workload(env: PitstopEnv, namespace: str, node: str) -> str:
    """One pod pinned to `node` under a PDB that refuses every eviction (until deleted)."""
    name = f"app-{node[-2:]}"
    create_deployment(env.api, namespace, name, 1, node_selector={"kubernetes.io/hostname": node})
    create_pdb(env.api, namespace, name, {"app": name}, min_available=1)
    env.wait(lambda: running_pods(env.api, namespace, f"app={name}"), f"{name}'s pod")
    return name


def lease_of(env: PitstopEnv, node: str) -> dict[str, Any]:
    return dict(env.lock().get("nodes", {}).get(node) or {})


def finish_lease_as_another_brain(env: PitstopEnv, window: str, node: str) -> None:
    """What a second brain does when it finishes a node: the lock first here (so this brain
    cannot re-cordon it in between), then the node's marks and cordon undone."""
    config_map = env.core.read_namespaced_config_map("pitstop-lock", env.namespace)
    state = json.loads(config_map.data["state.json"])
    del state["nodes"][node]
    boot = env.node(node).status.node_info.boot_id
    record = state["windows"].setdefault(window, {})
    record.setdefault("completed", []).append(
        {
            "node": node,
            "finished": datetime.now(UTC).isoformat(),
            "result": "Rebooted",
            "message": "finished by another brain",
            "bootID": boot,
        }
    )
    config_map.data["state.json"] = json.dumps(state)
    env.core.replace_namespaced_config_map("pitstop-lock", env.namespace, config_map)
    env.core.patch_node(
        node,
        {
            "metadata": {"annotations": {contract.WINDOW_ANNOTATION: None}},
            "spec": {"unschedulable": None},
        },
    )


def test_a_node_uncordoned_during_its_drain_is_never_evicted_or_rebooted_uncordoned(
    env: PitstopEnv,
) -> None:
    """The fault test's failure, made deterministic: while the brain drains two nodes, another
    brain finishes one (lease gone, node uncordoned) and a person uncordons the other. Before
    the fix the brain kept evicting on both (its memory said "I cordoned them") and would have
    rebooted them uncordoned."""
    finished, uncordoned = env.add_nodes(2, zones=1)
    workload = create_namespace(env.api)
    apps = [pinned_workload(env, workload, node) for node in (finished, uncordoned)]
    env.flag([finished, uncordoned])
    window = env.window(
        "uncordon", {"maxUnavailable": 2, "drain": {"timeout": "150s", "onTimeout": "Abort"}}
    )
    with CordonSampler(env.api, workload, env.job_namespace) as sampler, env.hosts() as hosts:
        env.start_brain()
        env.wait(
            lambda: all(
                env.node(node).spec.unschedulable and lease_of(env, node).get("phase") == "Draining"
                for node in (finished, uncordoned)
            ),
            "both nodes cordoned and draining",
            60,
        )
        time.sleep(3)  # the drains are refused by the PDBs (429) and retry every 5 s
        finish_lease_as_another_brain(env, window, finished)
        env.core.patch_node(uncordoned, {"spec": {"unschedulable": False}})
        time.sleep(3)
        for app in apps:  # evictions are allowed from now on
            client.PolicyV1Api(env.api).delete_namespaced_pod_disruption_budget(app, workload)

        def outcome() -> bool:
            return bool(sampler.uncordoned()) or (
                hosts.reboot_count(uncordoned) == 1 and not env.lock().get("nodes")
            )

        env.wait(outcome, "the uncordoned node to be drained again and rebooted", 120)
        time.sleep(3)
    assert sampler.uncordoned() == [], "evicted or rebooted while uncordoned"
    # The node another brain finished is left alone: not cordoned again, not drained, no Job.
    assert sampler.on(finished) == []
    assert not env.node(finished).spec.unschedulable
    assert contract.WINDOW_ANNOTATION not in (env.node(finished).metadata.annotations or {})
    assert hosts.reboot_count(finished) == 0
    # The node a person uncordoned was cordoned again, drained, rebooted once, and released.
    assert [s.what.split()[0] for s in sampler.on(uncordoned)].count("Job") == 1
    assert hosts.reboot_count(uncordoned) == 1
    assert not env.node(uncordoned).spec.unschedulable
    client.CoreV1Api(env.api).delete_namespace(workload)


def test_two_brains_in_two_consecutive_rollouts_drain_and_reboot_only_cordoned_nodes(
    env: PitstopEnv,
) -> None:
    """The fault test's shape: two brains roll the nodes, then roll them again. What one brain
    remembers from the first rollout must not let it skip the cordon in the second."""
    nodes = env.add_nodes(4, zones=2)
    workload = env.web_workload(4)
    env.window("again", {"maxUnavailable": 2, "drain": {"timeout": "60s"}})
    with (
        CordonSampler(env.api, workload, env.job_namespace) as sampler,
        env.hosts(jitter_seconds=0.5) as hosts,
    ):
        env.start_brain()
        env.start_brain()
        for rollout in (1, 2):
            for node in nodes:  # flagged anew (after the last reboot): a new rollout
                flag_node(env.api, node, since=datetime.now(UTC).isoformat(), reason="again")
            env.wait(
                lambda rollout=rollout: (
                    all(hosts.reboot_count(node) == rollout for node in nodes)
                    and not env.lock().get("nodes")
                ),
                f"rollout {rollout} done",
                150,
                explain=lambda: env.workload_report(workload),
            )
            time.sleep(2)
    assert sampler.uncordoned() == [], "evicted or rebooted while uncordoned"
    assert len([s for s in sampler.samples if s.what.startswith("Job")]) == 2 * len(nodes)
    for node in nodes:
        assert hosts.reboot_count(node) == 2
        assert not env.node(node).spec.unschedulable
    client.CoreV1Api(env.api).delete_namespace(workload)


def test_a_brain_frozen_while_another_finishes_its_node_cordons_it_in_the_next_rollout(
    env: PitstopEnv,
) -> None:
    """The two-brain failure made deterministic: brain A cordons and drains a node, is frozen
    (SIGSTOP) while brain B finishes that node, then runs alone in the next rollout. Before the
    fix A remembered "I cordoned (node, attempt 1)" and drained the node uncordoned."""
    node, spare = env.add_nodes(2, zones=1)
    workload = create_namespace(env.api)
    # One pod pinned to the node (no PDB): evicted in each drain, it comes back after.
    create_deployment(
        env.api, workload, "pinned", 1, node_selector={"kubernetes.io/hostname": node}
    )
    env.wait(lambda: running_pods(env.api, workload, "app=pinned"), "the pinned pod")
    env.flag([node])
    env.window("frozen", {"maxUnavailable": 1, "drain": {"timeout": "30s", "onTimeout": "Abort"}})
    with CordonSampler(env.api, workload, env.job_namespace) as sampler:
        first = env.start_brain()
        env.wait(lambda: lease_of(env, node).get("phase") == "WaitingForNode", "rebooting", 60)
        assert first.process is not None
        os.killpg(first.process.pid, signal.SIGSTOP)
        # From here the hosts reboot their nodes (one simulator: it counts every reboot).
        with env.hosts() as hosts:
            try:
                second = env.start_brain()
                env.wait(
                    lambda: hosts.reboot_count(node) == 1 and not env.lock().get("nodes"),
                    "brain B to finish the node",
                    60,
                )
                env.wait(lambda: not env.node(node).spec.unschedulable, "uncordoned", 20)
                second.stop()
                env.brains.remove(second)
            finally:
                os.killpg(first.process.pid, signal.SIGCONT)
            env.wait(lambda: running_pods(env.api, workload, "app=pinned"), "the pod back", 60)
            time.sleep(3)  # brain A runs again on its old copy of the lock, and learns it is old
            flag_node(env.api, node, since=datetime.now(UTC).isoformat(), reason="again")
            env.wait(
                lambda: (
                    bool(sampler.uncordoned())
                    or (hosts.reboot_count(node) == 2 and not env.lock().get("nodes"))
                ),
                "the second rollout",
                90,
            )
    assert sampler.uncordoned() == [], "evicted or rebooted while uncordoned"
    assert [s.what.split()[0] for s in sampler.on(node)].count("Job") == 2
    assert not env.node(node).spec.unschedulable
    assert spare not in {s.node for s in sampler.samples}
    client.CoreV1Api(env.api).delete_namespace(workload)


def test_a_job_is_never_created_for_a_node_uncordoned_before_its_reboot(env: PitstopEnv) -> None:
    """Rebooting reads the Node before the Job: uncordoned there, it goes back to Draining."""
    (node,) = env.add_nodes(1, zones=1)
    env.flag([node])
    # No drain (nothing to wait for); no hosts yet, so the first Job reboots nothing.
    env.window("rejob", {"maxUnavailable": 1, "drain": {"enabled": False}})
    brain = env.start_brain()
    env.wait(lambda: lease_of(env, node).get("phase") == "WaitingForNode", "WaitingForNode", 60)
    brain.stop()
    env.brains.remove(brain)
    # Put the lease back to Rebooting (as if the brain had died right after Drained, before its
    # Job), drop that Job, and uncordon the node: what a person (or a stale brain) may do.
    config_map = env.core.read_namespaced_config_map("pitstop-lock", env.namespace)
    state = json.loads(config_map.data["state.json"])
    state["nodes"][node]["phase"] = "Rebooting"
    config_map.data["state.json"] = json.dumps(state)
    env.core.replace_namespaced_config_map("pitstop-lock", env.namespace, config_map)
    for job in env.jobs():
        client.BatchV1Api(env.api).delete_namespaced_job(
            job.metadata.name, env.job_namespace, propagation_policy="Background"
        )
    env.wait(lambda: not env.jobs(), "the first Job gone", 30)
    env.core.patch_node(node, {"spec": {"unschedulable": False}})
    with CordonSampler(env.api, "default", env.job_namespace) as sampler, env.hosts() as hosts:
        env.start_brain()
        env.wait(lambda: hosts.reboot_count(node) == 1, "the node rebooted", 60)
        env.wait(lambda: not env.lock().get("nodes"), "the node done", 60)
    jobs = [sample for sample in sampler.samples if sample.what.startswith("Job")]
    assert len(jobs) == 1 and jobs[0].cordoned, sampler.samples


def pitstop(env: PitstopEnv, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("pitstop")), *words, "--namespace", env.namespace],
        env=env.plane.environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def node_events(env: PitstopEnv, node: str) -> list[Any]:
    return list(
        env.core.list_namespaced_event(
            "default", field_selector=f"involvedObject.kind=Node,involvedObject.name={node}"
        ).items
    )


def wait_for_refusal(env: PitstopEnv, node: str, text: str) -> None:
    """The ActionRefused Event follows the action's removal (it is posted once the removal
    succeeded), so a test that saw the removal waits a moment for it."""
    env.wait(
        lambda: any(
            event.reason == "ActionRefused" and text in event.message
            for event in node_events(env, node)
        ),
        f"an ActionRefused event on {node} saying {text!r}",
        10,
    )


def completed(env: PitstopEnv, window: str, node: str) -> list[dict[str, Any]]:
    record = env.lock().get("windows", {}).get(window, {})
    return [entry for entry in record.get("completed", []) if entry["node"] == node]


def assert_released(
    env: PitstopEnv, window: str, node: str, jobs_before: set[str], rests: bool = True
) -> None:
    """Released promptly: slot freed, uncordoned, action gone, resting (not taken again)."""
    env.wait(lambda: node not in env.lock().get("nodes", {}), f"{node}'s slot freed", 20)
    assert completed(env, window, node)[-1]["result"] == "Released"
    annotations = env.node(node).metadata.annotations or {}
    assert contract.ACTION_ANNOTATION not in annotations
    assert contract.ACTION_SINCE_ANNOTATION not in annotations
    assert contract.WINDOW_ANNOTATION not in annotations
    assert not env.node(node).spec.unschedulable
    retry_after = env.lock()["windows"][window].get("retryAfter", {})
    assert (node in retry_after) == rests
    if rests:
        time.sleep(4)  # several passes: still out, and no new Job
        assert node not in env.lock().get("nodes", {}), "re-admitted at once"
        assert {job.metadata.name for job in env.jobs()} <= jobs_before
        plan = pitstop(env, "plan").stdout
        assert any(node in line and "it was released" in line for line in plan.splitlines()), plan


def test_release_works_in_every_phase_and_the_node_rests(env: PitstopEnv) -> None:
    draining, waiting, failed = env.add_nodes(3, zones=1)
    workload = create_namespace(env.api)
    pinned_workload(env, workload, draining)  # its PDB holds the drain
    env.flag([draining, waiting, failed])
    window = env.window(
        "release",
        {
            "maxUnavailable": 3,
            "drain": {"timeout": "120s", "onTimeout": "Abort"},
            "reboot": {"nodeReturnTimeout": "90s"},
        },
    )
    # `waiting` goes down and stays away; `failed` comes back with its old boot ID (Failed).
    behaviours = {
        waiting: HostBehaviour(never_returns=True),
        failed: HostBehaviour(same_boot_id=True),
    }
    with env.hosts(behaviours=behaviours):
        env.start_brain()
        env.wait(
            lambda: (
                lease_of(env, draining).get("phase") == "Draining"
                and lease_of(env, waiting).get("phase") == "WaitingForNode"
            ),
            "one node draining, one waiting for its node",
            60,
        )
        # WaitingForNode (the node went away): the wait is given up, its
        # Job deleted (it must not reboot the node once uncordoned), and the node rests.
        waiting_job = lease_of(env, waiting)["jobName"]
        jobs_before = {job.metadata.name for job in env.jobs()}
        result = pitstop(env, "release", waiting)
        assert result.returncode == 0, result.stderr
        assert "wait is given up" in result.stdout
        assert_released(env, window, waiting, jobs_before)
        assert waiting_job not in {job.metadata.name for job in env.jobs()}
        # Draining (its PDB refuses the eviction): the drain stops, the node rests.
        assert lease_of(env, draining).get("phase") == "Draining"
        result = pitstop(env, "release", draining)
        assert result.returncode == 0, result.stderr
        assert "drain is stopped" in result.stdout
        assert_released(env, window, draining, jobs_before)
        # Failed (it did not reboot): released, resting; its old Job deleted.
        env.wait(lambda: lease_of(env, failed).get("phase") == "Failed", "Failed", 60)
        result = pitstop(env, "release", failed)
        assert result.returncode == 0, result.stderr
        assert_released(env, window, failed, {job.metadata.name for job in env.jobs()})
    client.CoreV1Api(env.api).delete_namespace(workload)


def test_release_in_health_check_skips_the_gate(env: PitstopEnv) -> None:
    (node,) = env.add_nodes(1, zones=1)
    env.flag([node])
    with loopback_server(Reply(status=503)) as hook:
        window = env.window(
            "gate",
            {
                "maxUnavailable": 1,
                "drain": {"timeout": "30s"},
                "hooks": {"postReboot": {"url": hook.url, "timeout": "2s", "retries": 20}},
                "reboot": {"healthGate": {"timeout": "10m"}},
            },
        )
        with env.hosts() as hosts:
            env.start_brain()
            env.wait(lambda: lease_of(env, node).get("phase") == "HealthCheck", "HealthCheck", 60)
            result = pitstop(env, "release", node)
            assert result.returncode == 0, result.stderr
            assert "health gate is skipped" in result.stdout
            # It rebooted: it does not need to rest, and is not taken again (not flagged).
            assert_released(env, window, node, set(), rests=False)
            assert hosts.reboot_count(node) == 1


def test_actions_are_removed_once_acted_on_refused_with_an_event_and_never_replayed(
    env: PitstopEnv,
) -> None:
    lost, idle = env.add_nodes(2, zones=1)
    env.flag([lost])
    window = env.window(
        "actions",
        {"maxUnavailable": 1, "drain": {"timeout": "30s"}, "reboot": {"nodeReturnTimeout": "12s"}},
    )
    behaviours = {lost: HostBehaviour(never_returns=True)}
    with env.hosts(behaviours=behaviours):
        env.start_brain()
        env.wait(lambda: lease_of(env, lost).get("phase") == "WaitingForNode", "waiting", 60)
        since = lease_of(env, lost)["since"]
        # retry on a node that is not Failed (written by hand, the CLI refuses it): refused
        # with an Event, and removed.
        env.core.patch_node(
            lost,
            {
                "metadata": {
                    "annotations": {
                        contract.ACTION_ANNOTATION: "retry",
                        contract.ACTION_SINCE_ANNOTATION: since,
                    }
                }
            },
        )
        env.wait(
            lambda: contract.ACTION_ANNOTATION not in (env.node(lost).metadata.annotations or {}),
            "the refused retry removed",
            20,
        )
        wait_for_refusal(env, lost, "only to a Failed node")
        # An action on a node not in maintenance: refused, removed, with an Event.
        env.core.patch_node(
            idle, {"metadata": {"annotations": {contract.ACTION_ANNOTATION: "release"}}}
        )
        env.wait(
            lambda: contract.ACTION_ANNOTATION not in (env.node(idle).metadata.annotations or {}),
            "the stray release removed",
            20,
        )
        wait_for_refusal(env, idle, "not in maintenance")
        # A release asked for the WaitingForNode phase that only arrives after the node has
        # failed (a stale request) is not replayed at the failure: the node stays Failed.
        env.wait(lambda: lease_of(env, lost).get("phase") == "Failed", "Failed", 60)
        env.core.patch_node(
            lost,
            {
                "metadata": {
                    "annotations": {
                        contract.ACTION_ANNOTATION: "release",
                        contract.ACTION_SINCE_ANNOTATION: since,
                    }
                }
            },
        )
        env.wait(
            lambda: contract.ACTION_ANNOTATION not in (env.node(lost).metadata.annotations or {}),
            "the stale release removed",
            20,
        )
        time.sleep(3)
        assert lease_of(env, lost).get("phase") == "Failed"
        wait_for_refusal(env, lost, "earlier phase")
        # The CLI's own release (for the phase it sees) is acted on and removed.
        result = pitstop(env, "release", lost)
        assert result.returncode == 0, result.stderr
        env.wait(lambda: lost not in env.lock().get("nodes", {}), "released", 20)
        assert contract.ACTION_ANNOTATION not in (env.node(lost).metadata.annotations or {})
        assert completed(env, window, lost)[-1]["result"] == "Released"


def test_a_node_released_while_away_rests_then_gets_a_job_of_its_own(env: PitstopEnv) -> None:
    """Fault testing: released in WaitingForNode, a node was taken again in the same second,
    found "reboot Job ... already exists" (the old one) and counted it as its new reboot."""
    (node,) = env.add_nodes(1, zones=1)
    env.flag([node])
    window = env.window(
        "again",
        {"maxUnavailable": 1, "drain": {"timeout": "6s"}, "reboot": {"nodeReturnTimeout": "5m"}},
    )
    behaviours = {node: HostBehaviour(never_returns=True)}
    with env.hosts(behaviours=behaviours) as hosts:
        env.start_brain()
        env.wait(lambda: lease_of(env, node).get("phase") == "WaitingForNode", "waiting", 60)
        old_job = lease_of(env, node)["jobName"]
        behaviours[node] = HostBehaviour()  # the host is fixed; its next Job reboots it
        result = pitstop(env, "release", node)
        assert result.returncode == 0, result.stderr
        env.wait(lambda: node not in env.lock().get("nodes", {}), "released", 20)
        released_at = time.monotonic()
        env.wait(lambda: lease_of(env, node), "taken again after its rest", 60)
        assert time.monotonic() - released_at >= 3, "taken again at once, without resting"
        env.wait(lambda: hosts.reboot_count(node) == 1, "rebooted by its new Job", 60)
        env.wait(lambda: not env.lock().get("nodes"), "done", 60)
    new_jobs = [entry for entry in completed(env, window, node) if entry["result"] == "Rebooted"]
    assert new_jobs, completed(env, window, node)
    assert old_job not in {job.metadata.name for job in env.jobs()}
    assert [record.job for record in hosts.reboots] != [old_job]
