"""The brain's API client keeps one pooled connection per API thread.

With urllib3's default pool (10 on two cores), the 11th concurrent call opened a connection of
its own and dropped it afterwards ("Connection pool is full, discarding connection"), hundreds
of times at 5,000 nodes. Played against a real HTTP server that answers slowly, so the calls
overlap.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from brain.kube import API_THREADS, CONNECTION_POOL_SIZE, make_api_client
from tests.brain.loopback import Reply, loopback_server

CONCURRENT_CALLS = 24
NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "pitstop-system"}}


def _kubeconfig(directory: Path, server: str) -> Path:
    path = directory / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "here", "cluster": {"server": server}}],
                "users": [{"name": "someone", "user": {"token": "t"}}],
                "contexts": [{"name": "here", "context": {"cluster": "here", "user": "someone"}}],
                "current-context": "here",
            }
        )
    )
    return path


def _pool_warnings(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    pool_size: int | None = None,
) -> int:
    """Make CONCURRENT_CALLS overlapping calls; count the pool-full warnings they caused."""
    from kubernetes import client
    from kubernetes.config import kube_config

    with loopback_server(Reply.json(NAMESPACE, delay_seconds=0.3)) as server:
        # $KUBECONFIG is read when the client is imported: set where it was read to.
        monkeypatch.setattr(
            kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(_kubeconfig(tmp_path, server.url))
        )
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        api_client = (
            make_api_client() if pool_size is None else make_api_client(pool_size=pool_size)
        )
        core = client.CoreV1Api(api_client)
        caplog.clear()
        with (
            caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"),
            ThreadPoolExecutor(max_workers=CONCURRENT_CALLS) as threads,
        ):
            # Each call back puts its connection into the pool, or drops it when full.
            names = list(
                threads.map(
                    lambda _: core.read_namespace("pitstop-system").metadata.name,
                    range(CONCURRENT_CALLS),
                )
            )
            assert names == ["pitstop-system"] * CONCURRENT_CALLS
        api_client.close()
    return sum("Connection pool is full" in record.getMessage() for record in caplog.records)


def test_the_pool_holds_a_connection_per_api_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert CONNECTION_POOL_SIZE >= API_THREADS >= CONCURRENT_CALLS
    assert _pool_warnings(tmp_path, monkeypatch, caplog) == 0


def test_a_pool_of_ten_drops_connections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The check above can fail: urllib3's old default size drops connections here."""
    assert _pool_warnings(tmp_path, monkeypatch, caplog, 10) > 0
