"""On the real control plane: a denied request and a missing CRD are one line and exit 1 from
every command (pitstop, pitstop-brain, pitstop-detector), and an unreadable lock for the
brain (said once; the brain runs on). The cases without a cluster are in
tests/brain/test_cli_errors.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from kubernetes import client

from brain.core.lock_state import LOCK_DATA_KEY
from localcluster.controlplane import ControlPlane
from localcluster.nodes import create_nodes, delete_nodes
from tests.pitstopctl.test_cli_errors import REPOSITORY, one_line, run

pytestmark = pytest.mark.cluster


def kubeconfig_for_service_account(
    cluster: ControlPlane, api_client: client.ApiClient, namespace: str, directory: Path
) -> Path:
    """A kubeconfig with the token of a new service account that no role is bound to."""
    core = client.CoreV1Api(api_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    token = core.create_namespaced_service_account_token(
        "nobody", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    config = json.loads(cluster.kubeconfig.read_text())
    config["users"] = [{"name": "nobody", "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = "nobody"
    path = directory / "nobody.kubeconfig"
    path.write_text(json.dumps(config))
    return path


def test_rbac_denied_names_the_verb_and_the_resource(
    window_crd: ControlPlane, api_client: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    kubeconfig = str(kubeconfig_for_service_account(window_crd, api_client, namespace, tmp_path))
    user = f"system:serviceaccount:{namespace}:nobody"

    for command in ("plan", "status"):
        result = run("pitstopctl.main", command, "--kubeconfig", kubeconfig)
        assert result.returncode == 1, result.stderr
        line = one_line(result, "pitstop")
        assert line.startswith("pitstop: permission denied (403 Forbidden):"), line
        assert f'User "{user}" cannot list resource "nodesmaintenancewindows"' in line

    node = create_nodes(api_client, [f"denied-{uuid.uuid4().hex[:6]}"])[0]
    try:
        result = run("pitstopctl.main", "retry", node, "--kubeconfig", kubeconfig)
        assert result.returncode == 1, result.stderr
        assert 'cannot get resource "nodes"' in one_line(result, "pitstop")

        result = run("brain.main", "--metrics-port", "0", KUBECONFIG=kubeconfig)
        assert result.returncode == 1, result.stderr
        line = one_line(result, "pitstop-brain")
        assert f'User "{user}" cannot list resource "nodes"' in line

        result = run(
            "detector",
            "--metrics-port",
            "0",
            NODE_NAME=node,
            KUBECONFIG=kubeconfig,
            PITSTOP_SENTINEL_PATH=str(tmp_path / "reboot-required"),
        )
        assert result.returncode == 1, result.stderr
        line = one_line(result, "pitstop-detector")
        assert line.startswith("pitstop-detector: permission denied (403 Forbidden):"), line
        assert 'cannot get resource "nodes"' in line
    finally:
        delete_nodes(api_client, [node])


def test_crd_not_installed(fresh_cluster: Callable[[], ControlPlane]) -> None:
    plane = fresh_cluster()  # a control plane of its own, without the CRD
    kubeconfig = str(plane.kubeconfig)
    for command in ("plan", "status"):
        result = run("pitstopctl.main", command, "--kubeconfig", kubeconfig)
        assert result.returncode == 1, result.stderr
        line = one_line(result, "pitstop")
        assert "the NodesMaintenanceWindow CRD is not installed" in line
        assert "kubectl apply --server-side -f charts/pitstop/crds/" in line
    result = run("brain.main", "--metrics-port", "0", KUBECONFIG=kubeconfig)
    assert result.returncode == 1, result.stderr
    assert "the NodesMaintenanceWindow CRD is not installed" in one_line(result, "pitstop-brain")


def test_brain_started_on_an_unreadable_lock_says_so_once_and_runs_on(
    window_crd: ControlPlane, api_client: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """Not a crash loop: only a running brain can show every window Degraded LockUnreadable
    (tests/integration/test_brain_robustness.py) and resume once the data is fixed."""
    client.CoreV1Api(api_client).create_namespaced_config_map(
        namespace,
        {"metadata": {"name": "bad-lock"}, "data": {LOCK_DATA_KEY: '{"nodes": {"n": 1}}'}},
    )
    environment = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
    environment.pop("KUBERNETES_SERVICE_HOST", None)
    environment["KUBECONFIG"] = str(window_crd.kubeconfig)
    stderr_path = tmp_path / "brain.stderr"
    with stderr_path.open("w") as stderr:
        brain = subprocess.Popen(
            [
                *(sys.executable, "-m", "brain.main", "--metrics-port", "0"),
                *("--namespace", namespace, "--lock-name", "bad-lock"),
            ],
            env=environment,
            cwd=REPOSITORY,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 60
        while "the lock is unreadable" not in stderr_path.read_text():
            assert brain.poll() is None, stderr_path.read_text()
            assert time.monotonic() < deadline, stderr_path.read_text()
            time.sleep(0.2)
        time.sleep(3)
        assert brain.poll() is None, f"the brain exited: {stderr_path.read_text()}"
    finally:
        brain.terminate()
        brain.wait(timeout=30)
    text = stderr_path.read_text()
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.startswith("pitstop-brain: ")]
    assert len(lines) == 1, text
    assert lines[0].startswith("pitstop-brain: the lock is unreadable"), lines[0]
    assert "starting anyway" in lines[0], lines[0]
