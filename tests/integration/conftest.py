"""Fixtures shared by the integration tests: the NodesMaintenanceWindow CRD, installed once."""

from __future__ import annotations

import time

import pytest

from localcluster.controlplane import ControlPlane
from localcluster.pitstop_processes import CRD_FILE


@pytest.fixture(scope="session")
def window_crd(cluster: ControlPlane) -> ControlPlane:
    """The CRD applied (idempotent, server-side) and served: discovery knows `nmw`."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/nodesmaintenancewindows.pitstop.dev"
    )
    deadline = time.monotonic() + 30
    while cluster.kubectl("get", "nmw", check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise TimeoutError("the NodesMaintenanceWindow API is not served after 30s")
        time.sleep(0.2)
    return cluster
