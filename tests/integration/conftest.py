"""Fixtures shared by the integration tests: the NodesMaintenanceWindow CRD, installed once."""

from __future__ import annotations

import pytest

from localcluster.controlplane import ControlPlane
from localcluster.pitstop_processes import install_window_crd


@pytest.fixture(scope="session")
def window_crd(cluster: ControlPlane) -> ControlPlane:
    """The CRD applied once for the session (see install_window_crd)."""
    install_window_crd(cluster)
    return cluster
