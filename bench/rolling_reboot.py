"""Times rolling reboots and counts the pods that met a node the control plane saw as not ready.

Each rollout reboots a fresh set of kwok nodes (3 zones, window maxUnavailable 2, one per zone,
unless told otherwise)
that run Deployments with PodDisruptionBudgets, against a private local control plane whose
real kube-controller-manager taints a node it sees NotReady. Per rollout it prints the wall
time (flags set -> last slot freed), the pod Events "Cancelling deletion" (the taint eviction
controller: a pod was on a node while it carried `not-ready:NoExecute`) and "NodeNotReady"
(the node lifecycle controller marked a pod NotReady), pods bound to a node while it carried
a not-ready/unreachable taint, uncordons while it did, and each node's drain time (Draining ->
Rebooting in the lock; p50/p90 over all rollouts at the end). A benchmark, not a test: it prints
figures and asserts nothing. `--brain-path` runs the brain from another checkout (the tree
before a change), so the same harness times both.

    uv run python bench/rolling_reboot.py [--rollouts 3] [--down-seconds 2] [--brain-path DIR]
    uv run python bench/rolling_reboot.py --nodes 6 --max-unavailable 1 --down-seconds 10
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from kubernetes import client

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from brain.core.api import DEFAULT_LOCK_NAME  # noqa: E402
from localcluster.controlplane import ControlPlane  # noqa: E402
from localcluster.hosts import HostBehaviour, HostSimulator, flag_node  # noqa: E402
from localcluster.nodes import (  # noqa: E402
    create_deployment,
    create_namespace,
    create_nodes,
    delete_namespace,
    delete_nodes,
    running_pods,
    wait_for,
)
from localcluster.observe import LockObserver, NodeHistory, PodBindings  # noqa: E402
from localcluster.pitstop_processes import BrainProcess, install_pitstop_api  # noqa: E402
from tests.conftest import api_client_for  # noqa: E402

LABEL = "pitstop-bench/rollout"
NAMESPACE, JOB_NAMESPACE = "pitstop-bench", "pitstop-bench-reboot"


def pod_events(core: client.CoreV1Api, namespace: str) -> dict[str, int]:
    counts = {"Cancelling deletion": 0, "NodeNotReady": 0}
    for event in core.list_namespaced_event(namespace).items:
        if event.reason == "TaintManagerEviction" and "Cancelling deletion" in event.message:
            counts["Cancelling deletion"] += event.count or 1
        if event.reason == "NodeNotReady":
            counts["NodeNotReady"] += event.count or 1
    return counts


def lock_nodes(core: client.CoreV1Api) -> dict[str, object]:
    try:
        config_map = core.read_namespaced_config_map(DEFAULT_LOCK_NAME, NAMESPACE)
    except client.exceptions.ApiException:
        return {}
    return dict(json.loads((config_map.data or {}).get("state.json") or "{}").get("nodes") or {})


def drain_seconds(lock: LockObserver, nodes: list[str]) -> list[float]:
    """Per node: first seen Draining -> first seen Rebooting in the lock (cordon and drain)."""
    seconds = []
    for name in nodes:
        phases = [(s.at, s.leases.get(name, {}).get("phase")) for s in lock.snapshots]
        draining = next((at for at, phase in phases if phase == "Draining"), None)
        rebooting = next(
            (at for at, phase in phases if phase == "Rebooting" and draining and at >= draining),
            None,
        )
        if draining is not None and rebooting is not None:
            seconds.append(rebooting - draining)
    return seconds


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (p50 of 6 values is the 3rd smallest)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def rollout(
    plane: ControlPlane, api: client.ApiClient, index: int, arguments: argparse.Namespace
) -> dict[str, object]:
    core = client.CoreV1Api(api)
    run = f"r{index}-{uuid.uuid4().hex[:4]}"
    nodes = [f"bench-{run}-{number}" for number in range(arguments.nodes)]
    for number, name in enumerate(nodes):
        create_nodes(api, [name], labels={LABEL: "on"}, zone=f"zone-{number % 3}")
    workload = create_namespace(api, "bench")
    for deployment in range(arguments.deployments):
        create_deployment(
            api,
            workload,
            f"app{deployment}",
            replicas=arguments.nodes * arguments.replicas_per_node,
            node_selector={LABEL: "on"},
            pdb_max_unavailable=1,
        )
    expected = arguments.nodes * arguments.deployments * arguments.replicas_per_node
    wait_for(lambda: len(running_pods(api, workload)) == expected, "workload running", 120)
    with (
        NodeHistory(api, label_selector=f"{LABEL}=on") as history,
        PodBindings(api, workload) as bindings,
        LockObserver(api, NAMESPACE) as lock,
    ):
        time.sleep(1)
        started = time.monotonic()
        for number, name in enumerate(nodes):
            flag_node(api, name, since=f"2026-01-01T00:{index:02d}:{number:02d}Z", reason="bench")
        wait_for(
            lambda: (
                all(
                    not (core.read_node(name).metadata.labels or {}).get(
                        "pitstop.dev/reboot-required"
                    )
                    for name in nodes
                )
                and not lock_nodes(core)
            ),
            "every node rebooted",
            arguments.timeout,
            interval=0.2,
        )
        elapsed = time.monotonic() - started
        time.sleep(1)
    bound_while_tainted = [
        binding.pod
        for binding in bindings.bindings
        if (state := history.at(binding.node, binding.at)) is not None and state.not_ready_taints
    ]
    uncordoned_tainted = {
        version.name
        for version in history.versions
        if not version.unschedulable and version.not_ready_taints
    }
    tainted_when_back = {
        version.name for version in history.versions if version.ready and version.not_ready_taints
    }
    back_to_uncordon = []  # per node: Ready with its new boot ID -> uncordoned
    for name in nodes:
        versions = history.of(name)
        first_boot = versions[0].boot_id if versions else ""
        back = next((v.at for v in versions if v.ready and v.boot_id != first_boot), None)
        uncordoned = next(
            (v.at for v in versions if back and v.at >= back and not v.unschedulable), None
        )
        if back is not None and uncordoned is not None:
            back_to_uncordon.append(uncordoned - back)
    drains = drain_seconds(lock, nodes)
    result: dict[str, object] = {
        "seconds": round(elapsed, 1),
        "drain s": [round(seconds, 2) for seconds in drains],
        "back to uncordon, mean s": round(statistics.mean(back_to_uncordon or [0.0]), 2),
        **pod_events(core, workload),
        "bound to a not-ready node": len(bound_while_tainted),
        "uncordoned while not-ready": len(uncordoned_tainted),
        "nodes Ready but still tainted": len(tainted_when_back),
    }
    delete_nodes(api, nodes)
    delete_namespace(api, workload)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rollouts", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=9)
    parser.add_argument("--deployments", type=int, default=3)
    parser.add_argument(
        "--replicas-per-node",
        type=int,
        default=1,
        help="2: a node holds two pods of a Deployment, so its budget refuses the second",
    )
    parser.add_argument("--max-unavailable", type=int, default=2, help="the window's limit")
    parser.add_argument(
        "--zone-max-unavailable", type=int, default=1, help="the window's limit per zone"
    )
    parser.add_argument("--down-seconds", type=float, default=2.0)
    parser.add_argument("--delay-seconds", type=float, default=0.5)
    parser.add_argument("--jitter-seconds", type=float, default=1.5)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--brain-path", type=Path, help="run the brain from this checkout")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    arguments = parser.parse_args()

    extra_env = {"PYTHONPATH": str(arguments.brain_path.resolve())} if arguments.brain_path else {}
    source = subprocess.run(
        [sys.executable, "-c", "import brain.flow; print(brain.flow.__file__)"],
        env={**extra_env, "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    ).stdout.strip()
    print(f"brain code: {source}")
    results = []
    with ControlPlane(name="pitstop-bench") as plane:
        api = api_client_for(plane)
        install_pitstop_api(plane, NAMESPACE, JOB_NAMESPACE)
        plane.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": "pitstop.dev/v1alpha1",
                    "kind": "NodesMaintenanceWindow",
                    "metadata": {"name": "bench"},
                    "spec": {
                        "nodeSelector": {"matchLabels": {LABEL: "on"}},
                        "maxUnavailable": arguments.max_unavailable,
                        "topology": {
                            "key": "topology.kubernetes.io/zone",
                            "maxUnavailable": arguments.zone_max_unavailable,
                        },
                        "drain": {"timeout": "120s"},
                    },
                }
            ),
        )
        brain = BrainProcess(
            plane,
            plane.workdir / "brain.log",
            namespace=NAMESPACE,
            job_namespace=JOB_NAMESPACE,
            extra_env=extra_env,
        )
        brain.start()
        host = HostBehaviour(arguments.delay_seconds, arguments.down_seconds)
        try:
            with HostSimulator(
                api,
                JOB_NAMESPACE,
                default=host,
                jitter_seconds=arguments.jitter_seconds,
                unflag_on_reboot=True,
            ):
                for index in range(arguments.rollouts):
                    result = rollout(plane, api, index, arguments)
                    print(f"rollout {index + 1}: {result}", flush=True)
                    results.append(result)
        finally:
            brain.stop()
            api.close()
    seconds = [float(str(result["seconds"])) for result in results]
    totals = {
        key: sum(int(str(result[key])) for result in results)
        for key in results[0]
        if key not in ("seconds", "back to uncordon, mean s", "drain s")
    }
    drains = [float(seconds) for result in results for seconds in result["drain s"]]  # type: ignore[attr-defined]
    gate = [float(str(result["back to uncordon, mean s"])) for result in results]
    print(
        f"{len(results)} rollouts of {arguments.nodes} nodes (down {arguments.down_seconds} s): "
        f"median {statistics.median(seconds):.1f} s, mean {statistics.mean(seconds):.1f} s; "
        f"back to uncordon {statistics.mean(gate):.2f} s a node; "
        f"drain p50 {percentile(drains, 0.5):.2f} s, p90 {percentile(drains, 0.9):.2f} s "
        f"({len(drains)} drains); "
        f"totals {totals}"
    )
    if arguments.json:
        arguments.json.write_text(
            json.dumps(
                {
                    "rollouts": results,
                    "totals": totals,
                    "drain_p50_s": percentile(drains, 0.5),
                    "drain_p90_s": percentile(drains, 0.9),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
