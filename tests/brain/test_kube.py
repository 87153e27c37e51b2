"""The one wrapper around the brain's API client, through a real ApiClient and real HTTP: each
request counted by verb, resource and code, timed, failures in the error counter, the server's
Date header read by the cluster clock, whichever API class made the request."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from brain.core.api import NO_ANSWER, ApiRequest
from brain.core.clock import ClusterClock
from brain.integrations.metrics import BrainMetrics
from brain.kube import (
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    ApiRequests,
    JsonApi,
    Kube,
    list_pages,
)
from tests.brain.loopback import Reply, loopback_server, refused_port

BRAIN = Path(__file__).resolve().parents[2] / "brain"


def api_client(url: str) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = url
    configuration.retries = False  # a refused connection fails at once
    return client.ApiClient(configuration)


def samples(metrics: BrainMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
    }


def test_every_request_is_counted_timed_and_failures_are_errors() -> None:
    metrics = BrainMetrics()
    clock = ClusterClock(30.0)
    seen: list[ApiRequest] = []

    def observe(request: ApiRequest) -> None:
        seen.append(request)
        metrics.observe_api_request(request)

    requests = ApiRequests(clock, observe=observe)
    with loopback_server() as server:
        api = api_client(server.url)
        requests.install(api)
        kube = Kube(api)  # finds the wrapper installed: counts once
        server.replies = [
            Reply.json({"kind": "NodeList", "items": []}),
            Reply.json({"kind": "Status", "code": 404}, status=404),
            Reply.json({"kind": "Status", "code": 429}, status=429),
            Reply.json({"kind": "Status", "code": 500}, status=500),
        ]
        asyncio.run(kube.get("/api/v1/nodes"))
        with pytest.raises(ApiException) as gone:
            asyncio.run(kube.get("/api/v1/nodes/gone"))
        assert gone.value.status == 404
        # The drain's way: its own JsonApi on the same ApiClient, not through Kube.
        eviction = {"metadata": {"name": "web", "namespace": "ns"}}
        with pytest.raises(ApiException) as refused:
            JsonApi(api).create("/api/v1/namespaces/ns/pods/web/eviction", eviction)
        assert refused.value.status == 429
        with pytest.raises(ApiException):
            JsonApi(api).create("/apis/batch/v1/namespaces/ns/jobs", {"metadata": {"name": "j"}})
        api.close()
    assert [(r.verb, r.resource, r.code) for r in seen] == [
        ("list", "nodes", "200"),
        ("get", "nodes", "404"),
        ("create", "pods/eviction", "429"),
        ("create", "jobs", "500"),
    ]
    assert all(0 <= r.seconds < 5 for r in seen)
    assert kube.requests == {
        "list nodes": 1,
        "get nodes": 1,
        "create pods/eviction": 1,
        "create jobs": 1,
    }
    scraped = samples(metrics)
    counted = {
        labels: value
        for (name, labels), value in scraped.items()
        if name == "pitstop_api_requests_total"
    }
    assert counted == {
        (("code", "200"), ("resource", "nodes"), ("verb", "list")): 1,
        (("code", "404"), ("resource", "nodes"), ("verb", "get")): 1,
        (("code", "429"), ("resource", "pods/eviction"), ("verb", "create")): 1,
        (("code", "500"), ("resource", "jobs"), ("verb", "create")): 1,
    }
    # Only the 500 is an API error: 404 and an eviction's 429 are answers the brain expects.
    assert scraped[("pitstop_api_errors_total", ())] == 1
    timed = (
        "pitstop_api_request_duration_seconds_count",
        (("resource", "nodes"), ("verb", "list")),
    )
    assert scraped[timed] == 1
    # The loopback server's Date header told the clock the server's time.
    assert clock.synchronised


def test_a_request_without_an_answer_is_an_error() -> None:
    metrics = BrainMetrics()
    api = api_client(f"http://127.0.0.1:{refused_port()}")
    ApiRequests(observe=metrics.observe_api_request).install(api)
    kube = Kube(api)
    with pytest.raises(Exception, match=r"Connection refused|Max retries"):
        kube.json.get("/api/v1/nodes", timeout=2)
    api.close()
    assert kube.requests == {"list nodes": 1}
    scraped = samples(metrics)
    labels = (("code", NO_ANSWER), ("resource", "nodes"), ("verb", "list"))
    assert scraped[("pitstop_api_requests_total", labels)] == 1
    assert scraped[("pitstop_api_errors_total", ())] == 1


def test_a_watch_is_counted_once_when_it_opens() -> None:
    """A streamed watch returns from the transport at its headers: one request, however long
    the stream runs afterwards."""
    body = b'{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"a"}}}\n'
    with loopback_server(Reply(body=body)) as server:
        api = api_client(server.url)
        kube = Kube(api)
        started = time.monotonic()
        response = kube.json.send("GET", "/api/v1/pods", query={"watch": True})
        lines = list(response.stream())
        response.release_conn()
        api.close()
    assert time.monotonic() - started < 5
    assert lines and kube.requests == {"watch pods": 1}


def test_a_client_is_wrapped_once() -> None:
    api = api_client("http://127.0.0.1:1")
    first = Kube(api)
    second = Kube(api)  # the same ApiClient: the same counts, not a second wrapper
    assert ApiRequests.of(api) is not None
    with pytest.raises(RuntimeError, match="already counted"):
        ApiRequests().install(api)
    assert first.requests == second.requests == {}
    api.close()


def test_json_answers_bodies_and_patch_types_go_over_the_wire_as_the_api_expects() -> None:
    """Bodies are JSON; a list patches as a JSON patch, an object as a strategic merge patch
    (built-in kinds) unless told (custom resources: merge patch); the query is the API's."""
    with loopback_server() as server:
        api = api_client(server.url)
        json_api = JsonApi(api)
        server.replies = [Reply.json({"metadata": {"resourceVersion": "7"}})] * 4
        assert json_api.patch("/api/v1/nodes/n1", [{"op": "remove", "path": "/x"}]) == {
            "metadata": {"resourceVersion": "7"}
        }
        json_api.patch("/api/v1/nodes/n1", {"spec": {"unschedulable": True}})
        json_api.patch("/apis/pitstop.dev/v1alpha1/nmw/w/status", {"status": {}}, MERGE_PATCH)
        json_api.create("/apis/batch/v1/namespaces/ns/jobs", {"kind": "Job"}, {"dryRun": "All"})
        api.close()
    sent = [(r.method, r.path, r.headers.get("Content-Type"), r.body) for r in server.requests]
    assert sent == [
        ("PATCH", "/api/v1/nodes/n1", JSON_PATCH, b'[{"op": "remove", "path": "/x"}]'),
        ("PATCH", "/api/v1/nodes/n1", STRATEGIC_MERGE_PATCH, b'{"spec": {"unschedulable": true}}'),
        ("PATCH", "/apis/pitstop.dev/v1alpha1/nmw/w/status", MERGE_PATCH, b'{"status": {}}'),
        (
            "POST",
            "/apis/batch/v1/namespaces/ns/jobs?dryRun=All",
            "application/json",
            b'{"kind": "Job"}',
        ),
    ]


def test_the_brain_never_loads_the_client_s_generated_api_classes() -> None:
    """Importing kubernetes' CoreV1Api costs 81 MiB and seconds of CPU (pydantic validators for
    ~1,200 methods): every brain module, imported in a fresh interpreter, leaves them out."""
    import subprocess
    import sys

    modules = sorted(
        "brain." + str(path.relative_to(BRAIN).with_suffix("")).replace("/", ".")
        for path in BRAIN.rglob("*.py")
        if path.name != "__init__.py"
    )
    program = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('kubernetes.client.api.')))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    ).stdout
    assert len(modules) > 40 and loaded.strip() == "[]", loaded


def test_a_list_is_read_in_pages_until_no_continue_token() -> None:
    with loopback_server() as server:
        api = api_client(server.url)
        server.replies = [
            Reply.json({"items": [{"n": 1}, {"n": 2}], "metadata": {"continue": "t1"}}),
            Reply.json({"items": [{"n": 3}], "metadata": {}}),
        ]
        pages = list(list_pages(JsonApi(api), "/api/v1/nodes", {"labelSelector": "a=b"}, 2))
        api.close()
    assert pages == [[{"n": 1}, {"n": 2}], [{"n": 3}]]
    assert [request.path for request in server.requests] == [
        "/api/v1/nodes?labelSelector=a%3Db&limit=2",
        "/api/v1/nodes?labelSelector=a%3Db&limit=2&continue=t1",
    ]
