"""Pods, budgets and API answers the drain's unit tests share: a fake API where its behaviour
is the subject (a watch's lines, an eviction's answer), the real drain code around it."""

from __future__ import annotations

import json
import queue
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException


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


def requests_of(calls: Iterable[Mapping[str, Any]], resource: str) -> dict[str, int]:
    """The requests a fake list method received, named as the brain's ApiClient counts them
    ("watch pods", "list pods": brain/kube.py). These tests' API classes are fakes, with no
    ApiClient whose transport the brain's one counter could wrap: what the fake received is the
    cost (tests/brain/test_kube.py checks the wrapper counts the same, a watch once)."""
    named = (f"{'watch' if call.get('watch') else 'list'} {resource}" for call in calls)
    return dict(Counter(named))


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
        self.calls: list[dict[str, Any]] = []
        self.opened = threading.Event()

    def list_pod_disruption_budget_for_all_namespaces(self, **arguments: Any) -> Any:
        self.calls.append(arguments)
        assert arguments["watch"] is True
        stream = ScriptedStream()
        stream.send("ADDED", self.current)
        if arguments.get("send_initial_events"):
            stream.send("BOOKMARK", INITIAL_EVENTS_END)
        self.streams.append(stream)
        self.opened.set()
        return stream
