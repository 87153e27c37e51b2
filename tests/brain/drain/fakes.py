"""Pods, budgets and API answers the drain's unit tests share: a fake API where its behaviour
is the subject (a watch's lines, an eviction's answer), the real drain code around it."""

from __future__ import annotations

import json
import queue
import re
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from brain.kube import ApiRequests, JsonApi


def pod(
    name: str,
    *,
    namespace: str = "default",
    owner: str | None = "ReplicaSet",
    phase: str = "Running",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    volumes: list[dict[str, Any]] | None = None,
    uid: str | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid or f"uid-{name}",
        "labels": labels or {},
        "annotations": annotations or {},
    }
    if owner is not None:
        metadata["ownerReferences"] = [
            {"kind": owner, "name": f"{name}-owner", "controller": True, "uid": "x"}
        ]
    return {"metadata": metadata, "spec": {"volumes": volumes or []}, "status": {"phase": phase}}


class WiredApi:
    """A real ApiClient whose transport fakes play, the brain's one wrapper (ApiRequests,
    brain/kube.py) installed around it as in the brain; `api` is the brain's JsonApi on it.

    The real JsonApi builds each request's URL; the wrapper counts it as it counts the brain's
    own ("watch pods", "list pods"). `answer` is either one function that answers every request
    or a fake with methods named as the API's operations (`list_pod_for_all_namespaces`,
    `create_namespaced_pod_eviction`), found by the request's method and path. A fake gets the
    request's query back as keywords (`field_selector`, `watch=True`) and answers with a stream
    (a watch), an object with `data` (a list), or None (an empty success).
    """

    def __init__(self, answer: Any) -> None:
        configuration = client.Configuration()
        configuration.host = "http://fake-api.invalid"
        self.api_client = client.ApiClient(configuration)
        self._answer = answer
        self.api_client.rest_client.request = self._transport
        self._requests = ApiRequests()
        self._requests.install(self.api_client)
        self.api = JsonApi(self.api_client)

    @property
    def requests(self) -> dict[str, int]:
        return self._requests.counts

    def _transport(self, method: str, url: str, *_: Any, **keywords: Any) -> Any:
        split = urlsplit(url)
        arguments = {
            _snake_case(name): {"true": True, "false": False}.get(value, value)
            for name, value in parse_qsl(split.query)
        }
        answered = self._route(method, split.path, arguments, keywords.get("body"))
        if answered is None or not hasattr(answered, "stream"):
            answered = _Raw(getattr(answered, "data", None) or "{}")
        return SimpleNamespace(status=200, headers={}, response=answered)

    def _route(self, method: str, path: str, arguments: dict[str, Any], body: Any) -> Any:
        if callable(self._answer):
            return self._answer(**arguments)
        eviction = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/eviction", path)
        if method == "POST" and eviction:
            namespace, name = eviction.groups()
            sent = json.loads(body) if isinstance(body, str | bytes) else body
            return self._answer.create_namespaced_pod_eviction(name, namespace, sent)
        if method == "GET" and path == "/api/v1/pods":
            return self._answer.list_pod_for_all_namespaces(**arguments)
        if method == "GET" and path == "/apis/policy/v1/poddisruptionbudgets":
            return self._answer.list_pod_disruption_budget_for_all_namespaces(**arguments)
        raise AssertionError(f"no fake answers {method} {path}")


def wired(fake: Any) -> JsonApi:
    """The brain's JsonApi with `fake` answering at the transport (see WiredApi)."""
    return WiredApi(fake).api


class _Raw:
    """A whole (not streamed) answer, as the transport hands it over."""

    def __init__(self, data: str | bytes) -> None:
        self.data = data.encode() if isinstance(data, str) else data  # bytes, as urllib3's

    def release_conn(self) -> None:
        pass

    def close(self) -> None:
        pass


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


class FakeCore:
    """Answers evictions with a prepared ApiException (or success) and records the bodies."""

    def __init__(self, status: int | None, body: dict[str, Any] | None = None) -> None:
        self.status = status
        self.body = body
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def create_namespaced_pod_eviction(
        self, name: str, namespace: str, body: dict[str, Any], **_: Any
    ) -> None:
        self.calls.append((name, namespace, body))
        if self.status is not None:
            error = ApiException(status=self.status, reason="refused")
            error.body = json.dumps(self.body or {})
            raise error


class FakeStream:
    """A watch response: yields prepared lines, then blocks until shut down (like a socket)."""

    def __init__(self, lines: list[dict[str, Any]]) -> None:
        self.lines = [json.dumps(line).encode() + b"\n" for line in lines]
        self.shut = threading.Event()
        self.closed = False

    def stream(self, amt: Any = None, decode_content: Any = None) -> Iterator[bytes]:
        yield from self.lines
        self.shut.wait(10)

    def shutdown(self) -> None:
        self.shut.set()

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        pass


def web_budget(disruptions_allowed: int, generation: int = 1, observed: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "shop", "name": "web", "generation": generation},
        "status": {"disruptionsAllowed": disruptions_allowed, "observedGeneration": observed},
    }


INITIAL_EVENTS_END = {
    "metadata": {"resourceVersion": "20", "annotations": {"k8s.io/initial-events-end": "true"}}
}


class ScriptedStream(FakeStream):
    """A PDB watch response whose events the test sends as it goes (`send`)."""

    def __init__(self) -> None:
        super().__init__([])
        self.events: queue.Queue[bytes | None] = queue.Queue()

    def send(self, kind: str, budget: dict[str, Any]) -> None:
        self.events.put(json.dumps({"type": kind, "object": budget}).encode() + b"\n")

    def stream(self, amt: Any = None, decode_content: Any = None) -> Iterator[bytes]:
        while (line := self.events.get()) is not None:
            yield line

    def shutdown(self) -> None:
        self.events.put(None)


class FakePolicy:
    """A PDB source: each watch is a ScriptedStream that starts with the budget's current state."""

    def __init__(self, current: dict[str, Any]) -> None:
        self.current = current
        self.streams: list[ScriptedStream] = []
        self.opened = threading.Event()

    def list_pod_disruption_budget_for_all_namespaces(self, **arguments: Any) -> Any:
        assert arguments["watch"] is True
        stream = ScriptedStream()
        stream.send("ADDED", self.current)
        if arguments.get("send_initial_events"):
            stream.send("BOOKMARK", INITIAL_EVENTS_END)
        self.streams.append(stream)
        self.opened.set()
        return stream
