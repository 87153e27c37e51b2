"""Fixtures shared by the integration tests: the NodesMaintenanceWindow CRD, installed once, and
a private Pitstop installation per test (`env`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from localcluster.controlplane import ControlPlane
from localcluster.pitstop_processes import install_window_crd
from tests.integration.pitstop_env import PitstopEnv, pitstop_env


@pytest.fixture(scope="session")
def window_crd(cluster: ControlPlane) -> ControlPlane:
    """The CRD applied once for the session (see install_window_crd)."""
    install_window_crd(cluster)
    return cluster


@pytest.fixture
def env(
    cluster: ControlPlane, api_client: client.ApiClient, tmp_path: Path
) -> Iterator[PitstopEnv]:
    """Pitstop installed for one test (its own namespaces, nodes and brains), removed after."""
    with pitstop_env(cluster, api_client, tmp_path) as environment:
        yield environment
