"""kured parity (issue 21) on the real control plane: a real brain, kwok nodes, simulated hosts."""

from __future__ import annotations

import calendar
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from datetime import time as time_of_day
from typing import Any

import pytest
from kubernetes import client

from localcluster.hosts import HostBehaviour
from localcluster.nodes import create_bare_pod, create_namespace, pod_template
from localcluster.pitstop_processes import DetectorProcess
from pitstop import contract
from tests.brain.loopback import Reply, loopback_server
from tests.detector.rpm_database import require_rpm_tools, rpm_database
from tests.integration.pitstop_env import TEST_LABEL, PitstopEnv
from tests.integration.test_cli_plan import run_plan

pytestmark = pytest.mark.cluster
QUICK_DRAIN = {"timeout": "30s"}


def window_nodes(env: PitstopEnv, window: str, phase: str) -> set[str]:
    status = env.get_window(window).get("status", {})
    return {entry["name"] for entry in status.get("nodes", []) if entry["phase"] == phase}


def pitstop_plan(env: PitstopEnv) -> str:
    return run_plan(env.plane.kubeconfig, env.namespace, check=True).stdout


def test_a_node_scope_pod_blocker_holds_only_the_node_the_pod_runs_on(env: PitstopEnv) -> None:
    held, free = env.add_nodes(2, zones=1)
    workload = create_namespace(env.api)
    backup = f"backup-{env.run}"
    create_bare_pod(env.api, workload, backup, held)
    env.flag([held, free])  # `held` first in line: without the scope it would go first
    window = env.window(
        "per-node",
        {
            "maxUnavailable": 2,
            "drain": QUICK_DRAIN,
            "blockers": {
                "pods": [{"labelSelector": {"matchLabels": {"app": backup}}, "scope": "Node"}]
            },
        },
    )
    with env.observer() as observer, env.hosts() as hosts:
        env.start_brain()
        env.wait(lambda: window_nodes(env, window, "Done") == {free}, f"{free} Done", 90)
        # The window is not blocked as a whole; the held node waits, and `pitstop plan` names
        # the pod that holds it.
        assert env.condition(window, "Blocked").get("status") == "False"
        assert held not in {lease for lease in env.lock().get("nodes", {})}
        plan = pitstop_plan(env)
        line = next(text for text in plan.splitlines() if f" {held} " in text)
        assert "NodeBlocked" in line and f"{workload}/{backup}" in line, plan

        client.CoreV1Api(env.api).delete_namespaced_pod(backup, workload, grace_period_seconds=0)
        env.wait(lambda: window_nodes(env, window, "Done") == {held, free}, f"{held} Done", 90)
    assert sorted(record.node for record in hosts.reboots) == sorted([held, free])
    assert observer.peak() >= 1
    client.CoreV1Api(env.api).delete_namespace(workload)


def taints(env: PitstopEnv, node: str) -> dict[str, str]:
    return {taint.key: taint.effect for taint in env.node(node).spec.taints or []}


def labels(env: PitstopEnv, node: str) -> dict[str, str]:
    return dict(env.node(node).metadata.labels or {})


def test_node_labels_before_and_after_and_a_chosen_pending_taint(env: PitstopEnv) -> None:
    first, second = env.add_nodes(2, zones=1)
    env.flag([first, second])
    window = env.window(
        "labels",
        {
            "drain": QUICK_DRAIN,
            "reboot": {
                "nodeLabels": {
                    "before": {
                        "example.com/maintenance": "rebooting",
                        "example.com/drained": "yes",
                    },
                    "after": {"example.com/maintenance": "done"},
                },
                "pendingTaint": {"key": "example.com/reboot-soon", "effect": "NoSchedule"},
            },
        },
    )
    slow = HostBehaviour(delay_seconds=4.0, down_seconds=1.0)
    with env.hosts(default=slow):
        env.start_brain()
        # The first node is in maintenance with the `before` labels; the second waits with the
        # window's own taint (and not the default one).
        env.wait(lambda: first in env.lock().get("nodes", {}), f"{first} admitted", 60)
        env.wait(
            lambda: labels(env, first).get("example.com/maintenance") == "rebooting",
            "the before labels",
            30,
        )
        assert labels(env, first)["example.com/drained"] == "yes"
        env.wait(
            lambda: taints(env, second).get("example.com/reboot-soon") == "NoSchedule",
            "the chosen pending taint on the waiting node",
            30,
        )
        assert "pitstop.dev/reboot-pending" not in taints(env, second)
        env.wait(lambda: window_nodes(env, window, "Done") == {first, second}, "both Done", 120)
    for name in (first, second):
        assert labels(env, name).get("example.com/maintenance") == "done", name
        assert "example.com/drained" not in labels(env, name), name
        assert not {"example.com/reboot-soon", "pitstop.dev/reboot-pending"} & set(
            taints(env, name)
        ), name


def test_the_pending_taint_can_be_switched_off(env: PitstopEnv) -> None:
    first, second = env.add_nodes(2, zones=1)
    env.flag([first, second])
    window = env.window(
        "no-taint", {"drain": QUICK_DRAIN, "reboot": {"pendingTaint": {"enabled": False}}}
    )
    seen: set[str] = set()
    slow = HostBehaviour(delay_seconds=3.0, down_seconds=1.0)
    with env.hosts(default=slow):
        env.start_brain()

        def finished() -> bool:
            seen.update(taints(env, second))
            return window_nodes(env, window, "Done") == {first, second}

        env.wait(finished, "both Done", 120)
    assert "pitstop.dev/reboot-pending" not in seen


def second_tuesdays(after: date, count: int) -> list[date]:
    found: list[date] = []
    year, month = after.year, after.month
    while len(found) < count:
        tuesdays = [
            day
            for day in range(1, calendar.monthrange(year, month)[1] + 1)
            if date(year, month, day).weekday() == 1
        ]
        candidate = date(year, month, tuesdays[1])
        if candidate >= after:
            found.append(candidate)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return found


def test_a_second_tuesday_window_is_accepted_and_pitstop_plan_shows_its_openings(
    env: PitstopEnv,
) -> None:
    env.add_nodes(1, zones=1)
    window = env.window(
        "patch-tuesday",
        {
            "schedule": {
                "timeZone": "UTC",
                "windows": [
                    {"monthly": [{"weekday": "Tue", "nth": 2}], "start": "22:00", "end": "23:59"}
                ],
            }
        },
    )
    stored = env.get_window(window)["spec"]["schedule"]["windows"][0]
    assert stored["monthly"] == [{"weekday": "Tue", "nth": 2}]
    now = datetime.now(UTC)
    nights = [
        datetime.combine(day, time_of_day(22, 0), tzinfo=UTC)
        for day in second_tuesdays(now.date().replace(day=1), 5)
    ]
    expected = [f"{night:%Y-%m-%dT%H:%M:%SZ}" for night in nights if night > now][:3]
    plan = pitstop_plan(env)
    block = plan.split(f"Window {window}")[1].split("\nWindow ")[0]
    line = next(text for text in block.splitlines() if "next openings:" in text)
    shown = line.split("next openings:")[1].split("; ")
    assert [text.strip() for text in shown] == expected, plan


def test_a_notification_template_is_rendered_in_a_delivered_notification(
    env: PitstopEnv,
) -> None:
    nodes = env.add_nodes(1, zones=1)
    env.flag(nodes)
    # Accepted by the API server (it checks the shape only), refused by the brain.
    broken = env.window(
        "broken-template",
        {
            "nodeSelector": {"matchLabels": {"pitstop-test/none": env.run}},
            "notify": {"secretRef": {"name": "notify"}, "body": "$node is $status"},
        },
    )
    with loopback_server(Reply()) as receiver:
        url = f"json://127.0.0.1:{receiver.port}/notify"
        env.core.create_namespaced_secret(
            env.namespace,
            {"metadata": {"name": "notify"}, "stringData": {"urls": url}},
        )
        window = env.window(
            "templated",
            {
                "drain": QUICK_DRAIN,
                "notify": {
                    "secretRef": {"name": "notify"},
                    "events": ["Succeeded"],
                    "title": "[$cluster] $node rebooted",
                    "body": "$window: $reason ($message), phase $phase",
                },
            },
        )
        with env.hosts():
            env.start_brain(extra_env={"PITSTOP_CLUSTER_NAME": "lab-eu-1"})
            (request,) = receiver.wait_for_requests(1, timeout=90)
        invalid = env.wait_condition(broken, "Ready", "False", 30)
    body = request.json()
    assert body["title"] == f"[lab-eu-1] {nodes[0]} rebooted"
    assert body["message"] == f"{window}: Rebooted (rebooted, back and healthy), phase Done"
    assert "spec.notify.body" in invalid["message"] and "$status" in invalid["message"]

    preview = run_plan(
        env.plane.kubeconfig,
        env.namespace,
        "--notify-preview",
        "--cluster-name",
        "lab-eu-1",
        check=True,
    ).stdout
    assert f"title: [lab-eu-1] {nodes[0]} rebooted" in preview, preview


def test_the_health_gate_holds_the_uncordon_until_the_daemonset_pod_is_ready(
    env: PitstopEnv,
) -> None:
    (node,) = env.add_nodes(1, zones=1)
    workload = create_namespace(env.api)
    agent = f"agent-{env.run}"
    client.AppsV1Api(env.api).create_namespaced_daemon_set(
        workload,
        {
            "metadata": {"name": agent},
            "spec": {
                "selector": {"matchLabels": {"app": agent}},
                "template": pod_template(agent, node_selector={TEST_LABEL: env.run}),
            },
        },
    )

    def agent_pod() -> Any:
        pods = env.core.list_namespaced_pod(workload, label_selector=f"app={agent}").items
        return pods[0] if pods and pods[0].status.phase == "Running" else None

    pod = env.wait(agent_pod, "the DaemonSet pod running", 60)
    # The node's agent is not Ready (a CNI that has not come up, say). Phase Unknown: no kwok
    # stage plays a kubelet for it, so it stays so until the test says otherwise.
    not_ready = {"type": "Ready", "status": "False", "lastTransitionTime": None}
    env.core.patch_namespaced_pod_status(
        pod.metadata.name, workload, {"status": {"phase": "Unknown", "conditions": [not_ready]}}
    )
    env.flag([node])
    window = env.window(
        "agents", {"drain": QUICK_DRAIN, "reboot": {"healthGate": {"timeout": "5m"}}}
    )
    with env.hosts() as hosts:
        env.start_brain()
        env.wait(
            lambda: env.lock().get("nodes", {}).get(node, {}).get("phase") == "HealthCheck",
            "the node back and in the health gate",
            90,
        )
        time.sleep(8)  # more than one health-gate poll: it holds
        assert env.lock()["nodes"][node]["phase"] == "HealthCheck"
        assert env.node(node).spec.unschedulable
        assert len(hosts.reboots) == 1

        ready = {"type": "Ready", "status": "True", "lastTransitionTime": None}
        env.core.patch_namespaced_pod_status(
            pod.metadata.name, workload, {"status": {"phase": "Running", "conditions": [ready]}}
        )
        env.wait(lambda: window_nodes(env, window, "Done") == {node}, f"{node} Done", 60)
    assert not env.node(node).spec.unschedulable
    client.CoreV1Api(env.api).delete_namespace(workload)


def test_the_rpm_sidecar_flags_a_node_from_an_rpm_database(env: PitstopEnv) -> None:
    require_rpm_tools()
    (node,) = env.add_nodes(1, zones=1)
    workdir = env.logs / "rpm"
    workdir.mkdir()
    database = rpm_database(workdir, ["glibc", "bash"])
    shared = workdir / "shared"  # the emptyDir the two containers share
    shared.mkdir()
    sentinel = shared / "reboot-required"
    detector = DetectorProcess(env.plane, node, sentinel, env.logs / "detector.log")
    detector.start()
    try:
        sidecar = subprocess.run(
            [
                sys.executable,
                "-m",
                "detector.rpm_check",
                "--once",
                f"--dbpath={database}",
                f"--sentinel={sentinel}",
                f"--config-dir={workdir / 'none'}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        # glibc was installed seconds ago, after this machine (the "host") booted.
        assert sidecar.returncode == 1, sidecar.stderr

        def flagged() -> bool:
            metadata = env.node(node).metadata
            return (metadata.labels or {}).get(
                contract.REBOOT_REQUIRED_LABEL
            ) == contract.REBOOT_REQUIRED_VALUE and (metadata.annotations or {}).get(
                contract.REBOOT_REASON_ANNOTATION
            ) == "glibc"

        env.wait(flagged, "the node flagged by the detector with the reason glibc", 30)
    finally:
        detector.stop()
