"""The chart's rendered manifests accepted by the real API server (`kubectl apply
--dry-run=server`: full validation, defaulting and admission, nothing stored) for the default
values and the realistic value sets of charts/pitstop/ci/, with the window CRD installed and
minimal Prometheus Operator CRDs for the ServiceMonitors and the PrometheusRule."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.controlplane import ControlPlane

pytestmark = pytest.mark.cluster

CHART = Path(__file__).resolve().parents[2] / "charts" / "pitstop"
VALUE_SETS = sorted((CHART / "ci").glob("*-values.yaml"))


def minimal_crd(kind: str, plural: str) -> dict[str, Any]:
    """A monitoring.coreos.com CRD that accepts any spec: enough for the API server to know the
    kind (the Prometheus Operator's own CRDs are not vendored here)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


MONITORING_CRDS = [
    minimal_crd("ServiceMonitor", "servicemonitors"),
    minimal_crd("PrometheusRule", "prometheusrules"),
]


@pytest.fixture(scope="module")
def monitoring_crds(cluster: ControlPlane, window_crd: ControlPlane) -> Iterator[None]:
    manifest = "\n---\n".join(json.dumps(crd) for crd in MONITORING_CRDS)
    cluster.kubectl("apply", "-f", "-", input=manifest)
    for crd in MONITORING_CRDS:
        cluster.wait_for_crd(crd["metadata"]["name"])
    yield
    cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=manifest, check=False)


@pytest.fixture(scope="module")
def created_namespaces(cluster: ControlPlane) -> Iterator[set[str]]:
    """Namespaces the dry runs needed, created for real and deleted after the last one (the
    value sets share some: pitstop-reboot, pitstop-node)."""
    created: set[str] = set()
    yield created
    for name in sorted(created):
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def render(cluster: ControlPlane, namespace: str, *arguments: str) -> str:
    command = [str(cluster.binaries["helm"]), "template", "pitstop", str(CHART), "-n", namespace]
    result = subprocess.run(
        [*command, *arguments], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def dry_run(
    cluster: ControlPlane, namespace: str, rendered: str, created: set[str]
) -> subprocess.CompletedProcess[str]:
    """`kubectl apply --dry-run=server` of the manifests, with the namespaces they put objects in
    created for real first (a dry-run Namespace is not there for the objects inside it)."""
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    namespaces = {namespace} | {
        d["metadata"]["namespace"] for d in documents if d["metadata"].get("namespace")
    }
    namespaces |= {d["metadata"]["name"] for d in documents if d["kind"] == "Namespace"}
    existing = set(cluster.kubectl("get", "namespaces", "-o", "name").stdout.split())
    for name in sorted(namespaces):
        if f"namespace/{name}" not in existing:
            cluster.kubectl("create", "namespace", name)
            created.add(name)
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=rendered, check=False, timeout=120
    )
    if result.returncode == 0:
        # One "(server dry run)" line per object: every document reached the API server.
        assert result.stdout.count("(server dry run)") == len(documents), result.stdout
    return result


@pytest.mark.parametrize(
    "values", [None, *VALUE_SETS], ids=lambda path: path.name if path else "defaults"
)
def test_rendered_manifests_pass_server_side_dry_run(
    cluster: ControlPlane, monitoring_crds: None, created_namespaces: set[str], values: Path | None
) -> None:
    namespace = f"dry-run-{uuid.uuid4().hex[:6]}"
    rendered = render(cluster, namespace, *(["-f", str(values)] if values else []))
    result = dry_run(cluster, namespace, rendered, created_namespaces)
    assert result.returncode == 0, result.stderr


def test_the_dry_run_refuses_what_the_schema_lets_through(
    cluster: ControlPlane, monitoring_crds: None, created_namespaces: set[str]
) -> None:
    """The check can fail: a toleration the schema accepts (any object) but the API refuses."""
    namespace = f"dry-run-{uuid.uuid4().hex[:6]}"
    rendered = render(
        cluster, namespace, "--set-json", 'detector.tolerations=[{"operator": "Sometimes"}]'
    )
    result = dry_run(cluster, namespace, rendered, created_namespaces)
    assert result.returncode != 0
    assert "Sometimes" in result.stderr and "tolerations" in result.stderr, result.stderr
