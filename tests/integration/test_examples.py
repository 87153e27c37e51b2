"""`kubectl apply -f examples/` on a real API server, then `pitstop plan -o json`: the windows
apply together without a Conflict and each governs the nodes and opens as its comment says
(release-freeze a weekly window with a blackout, not an always-open window over every node).
A control plane of its own: the catch-all would take over the shared cluster's nodes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubernetes import client

from localcluster.controlplane import ControlPlane
from localcluster.nodes import create_nodes
from localcluster.pitstop_processes import install_window_crd
from pitstop import contract
from tests.conftest import api_client_for
from tests.pitstopctl.test_examples_plan import GOVERNS, documented_year

pytestmark = pytest.mark.cluster

REPOSITORY = Path(__file__).resolve().parents[2]


def test_examples_apply_together_and_plan_as_their_comments_say(
    fresh_cluster: Callable[[], ControlPlane],
) -> None:
    plane = fresh_cluster()
    install_window_crd(plane)
    api = api_client_for(plane)
    core = client.CoreV1Api(api)
    for pool in ("gpu", "general", "batch"):
        create_nodes(api, [f"{pool}-1"], {"pool": pool}, zone="a")
    create_nodes(api, ["other-1"], {"pool": "web"}, zone="a")
    create_nodes(api, ["cp-1"], {"node-role.kubernetes.io/control-plane": ""}, zone="a")
    for name in ("gpu-1", "general-1", "batch-1", "other-1", "cp-1"):
        core.patch_node(
            name,
            {"metadata": {"labels": {contract.REBOOT_REQUIRED_LABEL: "true"}}},
        )

    applied = plane.kubectl("apply", "-f", str(REPOSITORY / "examples"))
    assert applied.stdout.count("created") == 4, applied.stdout
    result = subprocess.run(
        [sys.executable, "-m", "pitstopctl.main", "plan", "-o", "json", "--kubeconfig",
         str(plane.kubeconfig)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    windows = {window["name"]: window for window in plan["windows"]}

    assert plan["conflicts"] == [] and plan["invalidWindows"] == []
    assert {name: window["governed"] for name, window in windows.items()} == GOVERNS
    assert plan["flaggedUngoverned"] == ["cp-1"]  # the control plane: no example takes it

    # release-freeze: weeknights, so it closes within hours or opens within days.
    now = datetime.fromisoformat(plan["time"])
    freeze = windows["release-freeze"]
    if freeze["open"]:
        assert datetime.fromisoformat(freeze["openUntil"]) - now <= timedelta(hours=2)
    else:
        assert datetime.fromisoformat(freeze["nextOpen"]) - now <= timedelta(days=4)
    year = documented_year()
    assert now < datetime(year, 12, 20, tzinfo=UTC)  # the blackout is ahead, as documented

    emergency = windows["emergency-gpu-pool"]
    assert not emergency["open"]
    assert emergency["nextOpen"] == f"{year}-12-24T20:00:00Z"

    text = subprocess.run(
        [sys.executable, "-m", "pitstopctl.main", "plan", "--kubeconfig", str(plane.kubeconfig)],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert "Conflict" not in text
    assert "always open" not in text
    api.close()
