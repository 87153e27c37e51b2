"""Every command answers the common failures with one line and exit code 2 or 1, no traceback.

These cases need no cluster: a missing kubeconfig, an API server nobody listens for, and an
unreadable lock (the message for a lock that does not parse). RBAC denied and a missing CRD
are in tests/integration/test_command_errors.py, on the real control plane.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from brain.cluster_failures import EXIT_CONFIGURATION, EXIT_FAILURE, describe
from brain.core.lock_state import LockState

REPOSITORY = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unreachable_kubeconfig(directory: Path) -> Path:
    """A complete kubeconfig whose API server does not exist."""
    path = directory / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "gone",
                        "cluster": {
                            "server": f"https://127.0.0.1:{closed_port()}",
                            "insecure-skip-tls-verify": True,
                        },
                    }
                ],
                "users": [{"name": "someone", "user": {"token": "t"}}],
                "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "someone"}}],
                "current-context": "gone",
            }
        )
    )
    return path


def run(module: str, *arguments: str, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    env.update(environment)
    return subprocess.run(
        [sys.executable, "-m", module, *arguments],
        env=env,
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line(result: subprocess.CompletedProcess[str], program: str) -> str:
    """The single stderr line of a failed command (no traceback)."""
    assert "Traceback" not in result.stderr, result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith(f"{program}: ")]
    assert len(problems) == 1, result.stderr
    return problems[0]


def test_plan_without_a_kubeconfig(tmp_path: Path) -> None:
    result = run("pitstopctl.main", "plan", "--kubeconfig", str(tmp_path / "nonexistent"))
    assert result.returncode == EXIT_CONFIGURATION
    assert one_line(result, "pitstop").endswith(f"kubeconfig {tmp_path}/nonexistent does not exist")
    assert result.stderr.count("\n") == 1
    result = run("pitstopctl.main", "plan", KUBECONFIG=str(tmp_path / "nonexistent"), HOME="/")
    assert result.returncode == EXIT_CONFIGURATION
    assert "no usable Kubernetes configuration" in one_line(result, "pitstop")


def test_plan_with_the_api_server_unreachable(tmp_path: Path) -> None:
    kubeconfig = unreachable_kubeconfig(tmp_path)
    result = run("pitstopctl.main", "plan", "--kubeconfig", str(kubeconfig))
    assert result.returncode == EXIT_FAILURE
    line = one_line(result, "pitstop")
    assert "cannot reach the API server at 127.0.0.1:" in line
    assert "Connection refused" in line
    assert result.stderr.count("\n") == 1  # urllib3's retry warnings are not shown


def test_brain_without_a_kubeconfig(tmp_path: Path) -> None:
    result = run(
        "brain.main", "--metrics-port", "0", KUBECONFIG=str(tmp_path / "nonexistent"), HOME="/"
    )
    assert result.returncode == EXIT_CONFIGURATION
    assert "no usable Kubernetes configuration" in one_line(result, "pitstop-brain")


def test_brain_with_the_api_server_unreachable(tmp_path: Path) -> None:
    kubeconfig = unreachable_kubeconfig(tmp_path)
    result = run("brain.main", "--metrics-port", "0", KUBECONFIG=str(kubeconfig))
    assert result.returncode == EXIT_FAILURE
    assert "cannot reach the API server at 127.0.0.1:" in one_line(result, "pitstop-brain")


def test_detector_with_the_api_server_unreachable(tmp_path: Path) -> None:
    kubeconfig = unreachable_kubeconfig(tmp_path)
    result = run(
        "detector",
        "--metrics-port",
        "0",
        "--log-format",
        "json",
        NODE_NAME="node-a",
        KUBECONFIG=str(kubeconfig),
        PITSTOP_SENTINEL_PATH=str(tmp_path / "reboot-required"),
    )
    assert result.returncode == EXIT_FAILURE
    line = one_line(result, "pitstop-detector")
    assert "cannot reach the API server at https://127.0.0.1:" in line


def test_an_unreadable_lock_is_one_line() -> None:
    with pytest.raises(ValueError) as raised:
        LockState.from_json('{"nodes": {"n1": {"phase": "Sideways"}}}')
    described = describe(raised.value)
    assert described is not None
    message, exit_code = described
    assert exit_code == EXIT_FAILURE
    assert message.startswith("the lock is unreadable")
    assert "\n" not in message


def test_denied_and_unserved_answers_are_worded() -> None:
    forbidden = ApiException(status=403, reason="Forbidden")
    forbidden.body = json.dumps(
        {
            "kind": "Status",
            "message": 'nodes is forbidden: User "x" cannot list resource "nodes" in API group ""'
            " at the cluster scope",
        }
    )
    message, code = describe(forbidden) or ("", 0)
    assert (code, message) == (
        1,
        'permission denied (403 Forbidden): nodes is forbidden: User "x" cannot list resource'
        ' "nodes" in API group "" at the cluster scope',
    )
    unserved = ApiException(status=404, reason="Not Found")
    unserved.body = "404 page not found\n"
    assert "does not serve this resource type" in (describe(unserved) or ("", 0))[0]
    assert describe(RuntimeError("a bug")) is None  # keeps its traceback
