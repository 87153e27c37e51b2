"""kured parity (issue 21) on the real control plane: a real brain, kwok nodes, simulated hosts."""

from __future__ import annotations

import calendar
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from pathlib import Path

import pytest
from kubernetes import client

from localcluster.controlplane import ControlPlane
from localcluster.hosts import HostBehaviour
from localcluster.nodes import create_bare_pod, create_namespace
from tests.integration.pitstop_env import PitstopEnv, pitstop_env

pytestmark = pytest.mark.cluster
QUICK_DRAIN = {"timeout": "30s"}


@pytest.fixture
def env(
    cluster: ControlPlane, api_client: client.ApiClient, tmp_path: Path
) -> Iterator[PitstopEnv]:
    with pitstop_env(cluster, api_client, tmp_path) as environment:
        yield environment


def window_nodes(env: PitstopEnv, window: str, phase: str) -> set[str]:
    status = env.get_window(window).get("status", {})
    return {entry["name"] for entry in status.get("nodes", []) if entry["phase"] == phase}


def pitstop_plan(env: PitstopEnv) -> str:
    script = Path(sys.executable).with_name("pitstop")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "brain.cli"]
    result = subprocess.run(
        [*command, "plan", "--kubeconfig", str(env.plane.kubeconfig), "--namespace", env.namespace],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


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
        datetime.combine(day, time(22, 0), tzinfo=UTC)
        for day in second_tuesdays(now.date().replace(day=1), 5)
    ]
    expected = [f"{night:%Y-%m-%dT%H:%M:%SZ}" for night in nights if night > now][:3]
    plan = pitstop_plan(env)
    block = plan.split(f"Window {window}")[1].split("\nWindow ")[0]
    line = next(text for text in block.splitlines() if "next openings:" in text)
    shown = line.split("next openings:")[1].split("; ")
    assert [text.strip() for text in shown] == expected, plan
