"""`pitstop plan` against the local control plane: windows, flagged kwok nodes and a lock."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubernetes import client

from brain.core.lock_state import LOCK_DATA_KEY, LockState, NodeLease
from brain.core.phase import Phase
from localcluster.controlplane import ControlPlane
from localcluster.nodes import create_nodes, delete_nodes
from pitstop import contract

pytestmark = pytest.mark.cluster


def pitstop_command() -> list[str]:
    script = Path(sys.executable).with_name("pitstop")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pitstopctl.main"]


def run_plan(
    kubeconfig: Path,
    namespace: str,
    *options: str,
    check: bool = False,
    environment: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`pitstop plan` against `namespace` as a person runs it, its output captured
    (`environment`, where given, is all the environment it gets)."""
    return subprocess.run(
        [
            *pitstop_command(),
            "plan",
            "--kubeconfig",
            str(kubeconfig),
            "--namespace",
            namespace,
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
        env=environment,
    )


@pytest.fixture
def suffix() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture
def plan_nodes(api_client: client.ApiClient, suffix: str) -> Iterator[list[str]]:
    pool = {"pool": f"plan-{suffix}"}
    names = create_nodes(api_client, [f"plan-{suffix}-a1", f"plan-{suffix}-a2"], pool, zone="a")
    names += create_nodes(api_client, [f"plan-{suffix}-b1", f"plan-{suffix}-b2"], pool, zone="b")
    names += create_nodes(
        api_client, [f"plan-{suffix}-c1"], {**pool, "role": f"special-{suffix}"}, zone="c"
    )
    core = client.CoreV1Api(api_client)
    # Flag times within the nodes' life, but b2's: the brain ignores a time before a node's
    # creation (it would jump the queue), so b2 goes after b1.
    start = datetime.now(UTC) - timedelta(minutes=4)
    flagged = {
        short: (start + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for short, minutes in {"a1": 1, "a2": 2, "b1": 3, "c1": 0}.items()
    }
    flagged["b2"] = "1970-01-01T00:00:00Z"
    for short, since in flagged.items():
        core.patch_node(
            f"plan-{suffix}-{short}",
            {
                "metadata": {
                    "labels": {contract.REBOOT_REQUIRED_LABEL: contract.REBOOT_REQUIRED_VALUE},
                    "annotations": {contract.REBOOT_REQUIRED_SINCE_ANNOTATION: since},
                }
            },
        )
    yield names
    delete_nodes(api_client, names)


@pytest.fixture
def plan_windows(window_crd: ControlPlane, suffix: str) -> Iterator[tuple[str, str]]:
    main, special = f"plan-{suffix}-main", f"plan-{suffix}-special"
    # High priorities so that windows other tests leave in the shared cluster do not govern
    # these nodes.
    manifests = [
        {
            "metadata": {"name": main},
            "spec": {
                "priority": 900_000,
                "nodeSelector": {"matchLabels": {"pool": f"plan-{suffix}"}},
                "maxUnavailable": 2,
                "topology": {"key": "topology.kubernetes.io/zone", "maxUnavailable": 1},
            },
        },
        {
            "metadata": {"name": special},
            "spec": {
                "priority": 900_001,
                "nodeSelector": {"matchLabels": {"role": f"special-{suffix}"}},
                "schedule": {
                    "oneOff": [{"start": "2099-01-01T00:00:00Z", "end": "2099-01-02T00:00:00Z"}]
                },
            },
        },
    ]
    for body in manifests:
        body.update(apiVersion="pitstop.dev/v1alpha1", kind="NodesMaintenanceWindow")
        window_crd.kubectl("create", "-f", "-", input=json.dumps(body))
    yield main, special
    window_crd.kubectl("delete", "nmw", main, special, "--wait=false")


def test_pitstop_plan_prints_what_the_brain_would_do(
    cluster: ControlPlane,
    api_client: client.ApiClient,
    namespace: str,
    suffix: str,
    plan_nodes: list[str],
    plan_windows: tuple[str, str],
) -> None:
    main, special = plan_windows
    lock = LockState(
        nodes={
            f"plan-{suffix}-a1": NodeLease(
                window=main,
                phase=Phase.REBOOTING,
                since=datetime(2025, 6, 1, 12, tzinfo=UTC),
                domain="a",
            )
        }
    )
    client.CoreV1Api(api_client).create_namespaced_config_map(
        namespace,
        {"metadata": {"name": "test-lock"}, "data": {LOCK_DATA_KEY: lock.to_json()}},
    )
    result = run_plan(
        cluster.kubeconfig,
        namespace,
        "--lock-name",
        "test-lock",
        environment={
            key: value for key, value in cluster.environment().items() if key != "KUBECONFIG"
        },
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    main_block = text.split(f"Window {main} ")[1].split("\nWindow ")[0]
    special_block = text.split(f"Window {special} ")[1].split("\nWindow ")[0]

    assert "OPEN until" in main_block
    assert (
        "budget:    1 of 2 unavailable (1 in maintenance, 0 unhealthy counted), 1 free"
        in main_block
    )
    assert "per topology.kubernetes.io/zone: a 1/1, b 0/1" in main_block
    assert f"plan-{suffix}-a1  Rebooting since" in main_block
    governed = ", ".join(f"plan-{suffix}-{short}" for short in ("a1", "a2", "b1", "b2"))
    assert f"governed:  4 node(s): {governed}" in main_block
    flagged = [line.strip() for line in main_block.splitlines() if line.strip().startswith("batch")]
    # a2 is older than b1 but zone a is full: b1 starts now, a2 waits for the next batch.
    assert flagged[0].startswith(f"batch 2  plan-{suffix}-a2")
    assert "waits: NoDomainBudget" in flagged[0]
    assert flagged[1].startswith(f"batch 1  plan-{suffix}-b1")
    assert flagged[1].endswith("STARTS NOW")
    assert flagged[2].startswith(f"batch 2  plan-{suffix}-b2")
    assert (
        "reboot-required-since 1970-01-01T00:00:00Z ignored: before the node was created"
        in (flagged[2])
    )
    assert len(flagged) == 3

    # The special window took c1 over (higher priority) and is closed until its one-off.
    assert "closed; opens 2099-01-01T00:00:00Z, closes 2099-01-02T00:00:00Z" in special_block
    assert f"batch 1  plan-{suffix}-c1" in special_block
    assert "waits: WindowClosed" in special_block
    assert f"plan-{suffix}-c1" not in main_block

    # Read-only: the lock is as it was and no node was touched.
    stored = client.CoreV1Api(api_client).read_namespaced_config_map("test-lock", namespace)
    assert LockState.from_json(stored.data[LOCK_DATA_KEY]) == lock
    node = client.CoreV1Api(api_client).read_node(f"plan-{suffix}-b1")
    assert not node.spec.unschedulable


def test_pitstop_plan_treats_a_missing_lock_as_empty(
    cluster: ControlPlane, window_crd: ControlPlane
) -> None:
    result = run_plan(cluster.kubeconfig, f"absent-{uuid.uuid4().hex[:6]}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pitstop plan at ")


def test_pitstop_plan_says_in_one_line_that_the_lock_is_unreadable(
    cluster: ControlPlane, api_client: client.ApiClient, namespace: str, window_crd: ControlPlane
) -> None:
    client.CoreV1Api(api_client).create_namespaced_config_map(
        namespace,
        {"metadata": {"name": "junk-lock"}, "data": {LOCK_DATA_KEY: '{"nodes": "junk"}'}},
    )
    result = run_plan(cluster.kubeconfig, namespace, "--lock-name", "junk-lock")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"lock ConfigMap {namespace}/junk-lock key {LOCK_DATA_KEY} does not parse" in (
        result.stderr
    )
