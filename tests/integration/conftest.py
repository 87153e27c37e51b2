"""Fixtures shared by the integration tests: the NodesMaintenanceWindow CRD, installed once."""

from __future__ import annotations

import pytest

from localcluster.controlplane import ControlPlane
from localcluster.pitstop_processes import CRD_FILE


@pytest.fixture(scope="session")
def window_crd(cluster: ControlPlane) -> ControlPlane:
    """The CRD applied (idempotent, server-side) and served: discovery knows `nmw`."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    cluster.wait_for_crd("nodesmaintenancewindows.pitstop.dev")
    return cluster
