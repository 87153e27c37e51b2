"""The drain's watch-list client on a fake API: what its handler hears, and in which order,
when the server ends a watch, ends a watch-list before its state, or refuses a request."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from brain.drain.watch_list import WatchList
from tests.brain.drain.fakes import FakeStream, WiredApi, pod

END = {"metadata": {"resourceVersion": "20", "annotations": {"k8s.io/initial-events-end": "1"}}}


class EndingStream(FakeStream):
    """A watch the server ends after its lines (its timeout passed)."""

    def stream(self, amt: Any = None, decode_content: Any = None) -> Iterator[bytes]:
        yield from self.lines


class Recorder:
    """A handler that notes what it hears, on the event loop."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, Any]] = []
        self.loop_threads: set[int] = set()

    def on_state(self, objects: list[dict[str, Any]]) -> None:
        self.loop_threads.add(threading.get_ident())
        self.heard.append(("state", [item["metadata"]["name"] for item in objects]))

    def on_change(self, kind: str, item: dict[str, Any]) -> None:
        self.loop_threads.add(threading.get_ident())
        self.heard.append((kind, item["metadata"]["name"]))

    def on_failure(self, error: Exception, has_state: bool) -> None:
        self.heard.append(("failure", has_state))


class ScriptedServer:
    """Answers each watch request with the next prepared answer (lines, or an exception)."""

    def __init__(self, answers: list[list[dict[str, Any]] | Exception]) -> None:
        self.answers = answers
        self.calls: list[dict[str, Any]] = []
        self.done = threading.Event()

    def list_things(self, **arguments: Any) -> Any:
        self.calls.append(arguments)
        if len(self.calls) > len(self.answers):
            self.done.set()
            return FakeStream([])  # quiet until stopped
        answer = self.answers[len(self.calls) - 1]
        if isinstance(answer, Exception):
            raise answer
        return EndingStream(answer)


def run(server: ScriptedServer) -> tuple[Recorder, dict[str, int]]:
    """The watch-list on pods, `server` answering; what the handler heard, the requests made."""
    recorder = Recorder()
    api = WiredApi(server.list_things)

    async def scenario() -> None:
        watch = WatchList(
            api.api,
            "/api/v1/pods",
            recorder,
            what="things",
            query={"fieldSelector": "x=y"},
        )
        watch.start()
        assert await asyncio.to_thread(server.done.wait, 5), server.calls
        await watch.stop()

    asyncio.run(scenario())
    return recorder, api.requests


def test_a_watch_the_server_ends_resumes_from_its_last_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = ScriptedServer(
        [
            [{"type": "ADDED", "object": pod("a")}, {"type": "BOOKMARK", "object": END}],
            [
                {
                    "type": "MODIFIED",
                    "object": dict(pod("a"), metadata={"name": "a", "resourceVersion": "31"}),
                },
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "35"}}},
            ],
        ]
    )
    recorder, requests = run(server)
    assert recorder.heard == [("state", ["a"]), ("MODIFIED", "a")]
    assert recorder.loop_threads == {threading.get_ident()}, "heard on the event loop's thread"
    assert server.calls[0]["send_initial_events"] is True
    assert [call.get("resource_version") for call in server.calls[1:]] == ["20", "35"]
    assert all(call["field_selector"] == "x=y" and call["watch"] for call in server.calls)
    assert requests == {"watch pods": 3}


def test_a_watch_list_ended_before_its_state_starts_anew_and_delivers_one_state() -> None:
    server = ScriptedServer(
        [
            [{"type": "ADDED", "object": pod("a")}],  # the server's timeout, mid-state
            [
                {"type": "ADDED", "object": pod("a")},
                {"type": "ADDED", "object": pod("b")},
                {"type": "BOOKMARK", "object": END},
            ],
        ]
    )
    recorder, _ = run(server)
    assert recorder.heard == [("state", ["a", "b"])]
    assert [call.get("send_initial_events") for call in server.calls] == [True, True, None]


def test_failures_are_told_and_retried_after_a_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("brain.drain.watch_list.BACKOFF_FIRST_SECONDS", 0.05)
    server = ScriptedServer(
        [
            ApiException(status=500, reason="boom"),
            [{"type": "BOOKMARK", "object": END}],
            [{"type": "ERROR", "object": {"code": 500, "message": "etcd trouble"}}],
        ]
    )
    recorder, _ = run(server)
    assert recorder.heard == [("failure", False), ("state", []), ("failure", True)]
    assert server.calls[-1]["resource_version"] == "20", "resumed after the failure"
