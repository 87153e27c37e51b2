"""Day-to-day operation against a real brain: `pitstop status` and `pitstop plan -o json` while
one node reboots and another has failed, and the brain's `--log-format json` lines (every line
one object; the failed node's Warning Event at WARNING, naming the node and the window).
Run with -s to see the outputs that docs/operations.md shows."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from localcluster.hosts import HostBehaviour
from localcluster.nodes import ZONE_LABEL as ZONE
from tests.integration.pitstop_env import TEST_LABEL, PitstopEnv

pytestmark = pytest.mark.cluster


def pitstop(env: PitstopEnv, *arguments: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "pitstopctl.main", *arguments, "--namespace", env.namespace],
        env=env.plane.environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def phase(env: PitstopEnv, node: str) -> str:
    return str(env.lock().get("nodes", {}).get(node, {}).get("phase", ""))


def test_status_plan_json_and_json_logs_during_a_rollout(env: PitstopEnv) -> None:
    nodes = env.add_nodes(4, zones=2)
    lost, rolling = nodes[0], nodes[1:]
    for node in nodes:
        pool = "gpu" if node == lost else "general"
        env.core.patch_node(node, {"metadata": {"labels": {"pool": pool}}})
    env.flag(nodes)

    def selector(pool: str) -> dict[str, Any]:
        return {"matchLabels": {TEST_LABEL: env.run, "pool": pool}}

    gpu = env.window("gpu", {"nodeSelector": selector("gpu"), "maxUnavailable": 1,
                             "reboot": {"nodeReturnTimeout": "5s"}})  # fmt: skip
    general = env.window("general", {"nodeSelector": selector("general"), "maxUnavailable": 1,
                                     "topology": {"key": ZONE, "maxUnavailable": 1},
                                     "drain": {"timeout": "30s"}})  # fmt: skip
    behaviours = {lost: HostBehaviour(never_returns=True)}
    slow = HostBehaviour(delay_seconds=0.5, down_seconds=60)  # a node away for a minute
    with env.hosts(default=slow, behaviours=behaviours):
        brain = env.start_brain(extra_env={"PITSTOP_LOG_FORMAT": "json"})
        env.wait(lambda: phase(env, lost) == "Failed", "the gpu node to fail", 90)
        away = env.wait(
            lambda: next((n for n in rolling if phase(env, n) == "WaitingForNode"), None),
            "a general node to be away",
            90,
        )

        status = pitstop(env, "status")
        plan = json.loads(pitstop(env, "plan", "-o", "json"))
        print(f"\n$ pitstop status\n{status}\n$ pitstop plan -o json\n{json.dumps(plan)}")

    windows = [line.split()[0] for line in status.splitlines() if line.startswith(env.run)]
    assert windows == sorted([general, gpu])
    gpu_line = next(line for line in status.splitlines() if line.startswith(gpu))
    assert gpu_line.endswith("paused by a failed node")
    in_maintenance = status.split("In maintenance:")[1].split("Failed (")[0]
    assert away in in_maintenance and "WaitingForNode" in in_maintenance
    failed = status.split("Failed (")[1]
    assert f"{lost}  window {gpu}" in failed and "did not come back" in failed
    assert f"pitstop retry {lost}" in failed and f"pitstop release {lost}" in failed

    by_name = {window["name"]: window for window in plan["windows"]}
    assert by_name[gpu]["failed"] == [lost]
    assert by_name[gpu]["inMaintenance"][0]["phase"] == "Failed"
    assert [m["node"] for m in by_name[general]["inMaintenance"]] == [away]
    assert {f["node"] for f in by_name[general]["flagged"]} == set(rolling) - {away}

    # The log file starts with the command line (localcluster's header), then the brain's output.
    lines = [
        line
        for line in brain.log_path.read_text().splitlines()
        if line.strip() and not line.startswith("$ ")
    ]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
    warning = next(r for r in records if r.get("node") == lost and r["level"] == "WARNING")
    assert warning["logger"] == "pitstop.events" and warning["window"] == gpu
    started = next(r for r in records if r.get("node") == away and r.get("reason") == "Started")
    assert started["level"] == "INFO" and started["window"] == general
    print("\n$ a JSON log line of the brain\n" + next(
        line for line in lines if json.loads(line) == warning))  # fmt: skip
