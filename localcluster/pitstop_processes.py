"""Pitstop's own programs as real local processes, the way they run in a cluster.

The brain and each detector are started with the project's console scripts against a local
control plane; tests and the demo use them, and stop them (or SIGKILL them) like a kubelet.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from brain.core.api import (
    CRD_NAME,
    DEFAULT_JOB_NAMESPACE,
    DEFAULT_LOCK_NAME,
    DEFAULT_NAMESPACE,
    GROUP,
    PLURAL,
)
from localcluster.controlplane import ControlPlane
from localcluster.processes import Component, free_port

REPOSITORY = Path(__file__).resolve().parent.parent
CRD_FILE = REPOSITORY / "crds" / f"{GROUP}_{PLURAL}.yaml"


def _script(name: str) -> list[str]:
    """The console script from the same environment as this Python, else `python -m`."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return [str(beside)]
    found = shutil.which(name)
    if found:
        return [found]
    module = {"pitstop-brain": "brain.main", "pitstop-detector": "detector"}[name]
    return [sys.executable, "-m", module]


def install_window_crd(plane: ControlPlane) -> None:
    """The CRD applied (idempotent, server-side) and served: discovery knows `nmw`."""
    plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    plane.wait_for_crd(CRD_NAME)


def install_pitstop_api(plane: ControlPlane, namespace: str, job_namespace: str) -> None:
    """The CRD and the namespaces the brain needs (what the Helm chart does in a cluster)."""
    install_window_crd(plane)
    for name in {namespace, job_namespace}:
        manifest = f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"
        plane.kubectl("apply", "-f", "-", input=manifest)


class BrainProcess(Component):
    def __init__(
        self,
        plane: ControlPlane,
        log_path: Path,
        namespace: str = DEFAULT_NAMESPACE,
        job_namespace: str = DEFAULT_JOB_NAMESPACE,
        lock_name: str = DEFAULT_LOCK_NAME,
        resync_seconds: float = 10.0,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.metrics_port = free_port()
        env = plane.environment()
        # The brain authenticates as its own user, so its API requests can be counted apart.
        env["KUBECONFIG"] = str(plane.user_kubeconfig("pitstop-brain"))
        env.update(
            {
                "PITSTOP_NAMESPACE": namespace,
                "PITSTOP_JOB_NAMESPACE": job_namespace,
                "PITSTOP_LOCK_NAME": lock_name,
                "PITSTOP_METRICS_PORT": str(self.metrics_port),
                "PITSTOP_RESYNC_SECONDS": str(resync_seconds),
                "PITSTOP_JOB_IMAGE": "localhost/pitstop:test",
                # As the chart's downward API does: one name per brain, kept across restarts
                # (the status writer Lease's holder identity).
                "PITSTOP_POD_NAME": f"pitstop-brain-{log_path.stem}",
                **(extra_env or {}),
            }
        )
        super().__init__("pitstop-brain", _script("pitstop-brain"), log_path, env=env)


class DetectorProcess(Component):
    def __init__(
        self,
        plane: ControlPlane,
        node: str,
        sentinel: Path,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.metrics_port = free_port()
        env = plane.environment()
        env.update(
            {
                "NODE_NAME": node,
                "PITSTOP_SENTINEL_PATH": str(sentinel),
                "PITSTOP_METRICS_PORT": str(self.metrics_port),
                **(extra_env or {}),
            }
        )
        super().__init__(f"pitstop-detector-{node}", _script("pitstop-detector"), log_path, env=env)
