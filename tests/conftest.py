"""Shared fixtures: a real local control plane for every test marked (or using) `cluster`.

The control plane is started once per session (binaries built into the cache on first use).
Tests that disturb the whole cluster (stopping the API server, say) use `fresh_cluster`, which
starts a private one. When a test that used a cluster fails, the report names the log files of
every component.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from localcluster.controlplane import ControlPlane
from localcluster.nodes import create_namespace, delete_namespace

_started: list[ControlPlane] = []


def api_client_for(plane: ControlPlane) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(plane.kubeconfig), client_configuration=configuration)
    return client.ApiClient(configuration)


@pytest.fixture(scope="session")
def cluster() -> Iterator[ControlPlane]:
    plane = ControlPlane(name="pitstop-test")
    _started.append(plane)
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()
        _started.remove(plane)


@pytest.fixture(scope="session")
def api_client(cluster: ControlPlane) -> Iterator[client.ApiClient]:
    api = api_client_for(cluster)
    yield api
    api.close()


@pytest.fixture
def core_v1(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    """A fresh namespace, deleted after the test."""
    name = create_namespace(api_client)
    yield name
    delete_namespace(api_client, name)


@pytest.fixture
def fresh_cluster() -> Iterator[Callable[[], ControlPlane]]:
    """A factory of private control planes, each stopped after the test."""
    planes: list[ControlPlane] = []

    def start() -> ControlPlane:
        plane = ControlPlane(name="pitstop-private")
        planes.append(plane)
        _started.append(plane)
        plane.start()
        return plane

    yield start
    for plane in planes:
        plane.stop()
        _started.remove(plane)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """On a failure, name the log of every running component so the cause is one click away."""
    report = yield
    if getattr(report, "failed", False) and _started:
        lines = []
        for plane in _started:
            for name, path in plane.log_paths().items():
                lines.append(f"{name}: {path}")
        report.sections.append(("control-plane logs", "\n".join(lines)))  # type: ignore[attr-defined]
        # Keep the folders of a failed run so the logs can still be read.
        os.environ["PITSTOP_KEEP_CLUSTER_DIR"] = "1"
    return report


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses a control plane is marked `cluster` (select with -m)."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if {"cluster", "fresh_cluster", "api_client"} & set(fixtures):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture
def tmp_sentinel_dir(tmp_path: Path) -> Path:
    """A folder standing in for the host's /var/run (mounted at /kured in the detector pod)."""
    folder = tmp_path / "host-run"
    folder.mkdir()
    return folder
