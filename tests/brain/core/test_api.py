"""How a request of the brain is named in its metrics: verb and resource from its URL."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from brain.core.api import (
    CRD_NAME,
    DEFAULT_LOCK_NAME,
    GROUP,
    KIND,
    NO_ANSWER,
    PLURAL,
    SHORT_NAME,
    VERSION,
    ApiRequest,
    describe_request,
)

REPOSITORY = Path(__file__).resolve().parents[3]

HOST = "https://10.0.0.1:6443"


@pytest.mark.parametrize(
    ("method", "path", "verb", "resource"),
    [
        ("GET", "/api/v1/nodes", "list", "nodes"),
        ("GET", "/api/v1/nodes?labelSelector=a%3Db&limit=1", "list", "nodes"),
        ("GET", "/api/v1/nodes/node-1", "get", "nodes"),
        ("PATCH", "/api/v1/nodes/node-1", "patch", "nodes"),
        ("PATCH", "/api/v1/nodes/node-1/status", "patch", "nodes/status"),
        ("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn", "list", "pods"),
        ("GET", "/api/v1/pods?watch=true&fieldSelector=x", "watch", "pods"),
        ("GET", "/api/v1/pods?watch=1", "watch", "pods"),
        ("GET", "/api/v1/pods?watch=false", "list", "pods"),
        ("GET", "/api/v1/watch/namespaces/ns/pods", "watch", "pods"),
        ("POST", "/api/v1/namespaces/ns/pods/web-1/eviction", "create", "pods/eviction"),
        ("DELETE", "/api/v1/namespaces/ns/pods/web-1", "delete", "pods"),
        ("DELETE", "/api/v1/namespaces/ns/pods", "deletecollection", "pods"),
        ("GET", "/api/v1/namespaces/ns/configmaps/pitstop-lock", "get", "configmaps"),
        ("PUT", "/api/v1/namespaces/ns/configmaps/pitstop-lock", "update", "configmaps"),
        ("POST", "/api/v1/namespaces/ns/events", "create", "events"),
        # The namespace itself, and its subresources, are not resources in a namespace.
        ("GET", "/api/v1/namespaces", "list", "namespaces"),
        ("GET", "/api/v1/namespaces/ns", "get", "namespaces"),
        ("PUT", "/api/v1/namespaces/ns/status", "update", "namespaces/status"),
        ("PUT", "/api/v1/namespaces/ns/finalize", "update", "namespaces/finalize"),
        ("POST", "/apis/batch/v1/namespaces/jobs/jobs?dryRun=All", "create", "jobs"),
        ("GET", "/apis/batch/v1/namespaces/reboot/jobs/reboot-n", "get", "jobs"),
        ("GET", "/apis/policy/v1/poddisruptionbudgets", "list", "poddisruptionbudgets"),
        ("GET", "/apis/policy/v1/poddisruptionbudgets?watch=True", "watch", "poddisruptionbudgets"),
        ("PUT", "/apis/coordination.k8s.io/v1/namespaces/ns/leases/w", "update", "leases"),
        (
            "GET",
            "/apis/pitstop.dev/v1alpha1/nodesmaintenancewindows",
            "list",
            "nodesmaintenancewindows",
        ),
        (
            "PATCH",
            "/apis/pitstop.dev/v1alpha1/nodesmaintenancewindows/w/status",
            "patch",
            "nodesmaintenancewindows/status",
        ),
        ("GET", "/apis/pitstop.dev/v1alpha1", "get", "(discovery)"),
        ("GET", "/version", "get", "(non-resource)"),
        # An API proxy's path prefix before /api.
        ("GET", "/k8s/clusters/c-1/api/v1/nodes/n", "get", "nodes"),
    ],
)
def test_requests_are_named_as_the_api_server_names_them(
    method: str, path: str, verb: str, resource: str
) -> None:
    assert describe_request(method, HOST + path) == (verb, resource)


@pytest.mark.parametrize(
    ("code", "resource", "failed"),
    [
        ("200", "pods", False),
        ("201", "pods/eviction", False),
        ("404", "pods", False),  # gone: the flow expects it
        ("409", "configmaps", False),  # a lost race, decided again
        ("410", "pods", False),  # an expired resourceVersion: the watch resumes
        ("429", "pods/eviction", False),  # a disruption budget says not now
        ("429", "pods", True),  # the API server's own throttling
        ("403", "pods/eviction", True),
        ("422", "jobs", True),
        ("500", "pods/eviction", True),
        ("503", "nodes", True),
        (NO_ANSWER, "nodes", True),
    ],
)
def test_which_answers_are_api_errors(code: str, resource: str, failed: bool) -> None:
    assert ApiRequest("get", resource, code, 0.01).failed is failed


def test_the_constants_are_the_crds_and_the_charts() -> None:
    """The CRD and the chart are YAML and cannot import the constants: they are compared."""
    crd = yaml.safe_load((REPOSITORY / "crds" / f"{GROUP}_{PLURAL}.yaml").read_text())
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == CRD_NAME
    assert (crd["spec"]["group"], names["kind"], names["plural"]) == (GROUP, KIND, PLURAL)
    assert names["shortNames"] == [SHORT_NAME]
    assert [v["name"] for v in crd["spec"]["versions"] if v["storage"]] == [VERSION]
    values = yaml.safe_load((REPOSITORY / "charts" / "pitstop" / "values.yaml").read_text())
    assert values["brain"]["lockName"] == DEFAULT_LOCK_NAME
