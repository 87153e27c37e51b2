"""The brain's watch client on a fake API: what its handler hears, and in which order, when the
server ends a watch, ends a watch-list before its state, or refuses a request."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from brain.kube import JsonApi
from brain.watch_list import (
    CONNECT_TIMEOUT_SECONDS,
    LIST_READ_TIMEOUT_SECONDS,
    WATCH_READ_MARGIN_SECONDS,
    WATCH_SECONDS,
    WatchList,
    object_watch,
)
from tests.brain.drain.fakes import FakeStream, WiredApi, pod

SELECTOR = {"fieldSelector": "x=y"}
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


def watched(
    api: WiredApi,
    watch_of: Callable[[JsonApi], WatchList[Any]],
    ready: threading.Event,
    linger_seconds: float = 0.0,
) -> WatchList[Any]:
    """Start the watch `watch_of` builds, wait for `ready` (the server's prepared answers are
    used up) and a moment more, stop it."""

    async def scenario() -> WatchList[Any]:
        watch = watch_of(api.api)
        watch.start()
        assert await asyncio.to_thread(ready.wait, 5)
        await asyncio.sleep(linger_seconds)
        await watch.stop()
        return watch

    return asyncio.run(scenario())


def run(server: ScriptedServer) -> tuple[Recorder, dict[str, int]]:
    """The watch-list on pods, `server` answering; what the handler heard, the requests made."""
    recorder = Recorder()
    api = WiredApi(server.list_things)
    watched(
        api,
        lambda json_api: object_watch(
            json_api, "/api/v1/pods", recorder, what="things", query=SELECTOR
        ),
        server.done,
    )
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
    monkeypatch.setattr("brain.watch_list.BACKOFF_FIRST_SECONDS", 0.05)
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


class TimedWiredApi(WiredApi):
    """WiredApi that also notes each request's timeout (connect, read), as the transport gets
    it."""

    def __init__(self, answer: Any) -> None:
        super().__init__(answer)
        self.timeouts: list[tuple[bool, Any]] = []

    def _transport(self, method: str, url: str, *rest: Any, **keywords: Any) -> Any:
        self.timeouts.append(("watch=" in url, keywords.get("_request_timeout")))
        return super()._transport(method, url, *rest, **keywords)


class ViewHandler:
    """A handler in the watch's thread, as the Node watch is: it parses objects to names and
    notes the threads it ran in."""

    def __init__(self) -> None:
        self.threads: set[int] = set()
        self.states: list[list[str]] = []
        self.changes: list[tuple[str, str]] = []
        self.failures: list[Exception] = []

    def parse(self, item: dict[str, Any]) -> str:
        self.threads.add(threading.get_ident())
        return str(item["metadata"]["name"])

    def on_state(self, objects: list[str]) -> None:
        self.threads.add(threading.get_ident())
        self.states.append(objects)

    def on_change(self, kind: str, item: str) -> None:
        self.changes.append((kind, item))

    def on_failure(self, error: Exception, has_state: bool) -> None:
        self.failures.append(error)


class PagedServer:
    """Pods in pages of two: a, b, then c; the first continue token has expired by the time it
    is used (410), so the list starts over; then a watch from the list's version."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.expired_once = False
        self.watching = threading.Event()

    def answer(self, **arguments: Any) -> Any:
        self.calls.append(arguments)
        if arguments.get("watch"):
            self.watching.set()
            return FakeStream([{"type": "ADDED", "object": pod("d")}])
        if arguments.get("continue") == "page-2":
            if not self.expired_once:
                self.expired_once = True
                raise ApiException(status=410, reason="Expired")
            return _page([pod("c")], "", version="40")
        return _page([pod("a"), pod("b")], "page-2", version="39")


def _page(items: list[dict[str, Any]], token: str, version: str) -> Any:
    metadata = {"resourceVersion": version, "continue": token}
    return SimpleNamespace(data=json.dumps({"metadata": metadata, "items": items}))


def test_pages_are_parsed_in_the_watch_thread_and_an_expired_token_starts_over() -> None:
    server = PagedServer()
    api = TimedWiredApi(server.answer)
    handler = ViewHandler()

    watch = watched(
        api,
        lambda json_api: WatchList(
            json_api,
            "/api/v1/pods",
            handler,
            what="pods",
            query=SELECTOR,
            watch_lists=False,
            page_size=2,
        ),
        server.watching,
        linger_seconds=0.1,
    )
    assert (watch.lists, watch.watches, watch.events) == (1, 1, 1)
    assert handler.states == [["a", "b", "c"]]
    assert handler.changes == [("ADDED", "d")]
    assert handler.failures == []
    assert threading.get_ident() not in handler.threads, "parsed in the watch's thread"
    lists = [call for call in server.calls if not call.get("watch")]
    assert [call.get("continue") for call in lists] == [None, "page-2", None, "page-2"]
    assert all(call["limit"] == "2" and call["field_selector"] == "x=y" for call in lists)
    assert server.calls[-1]["resource_version"] == "40"
    assert api.requests == {"list pods": 4, "watch pods": 1}
    assert set(api.timeouts) == {
        (False, (CONNECT_TIMEOUT_SECONDS, LIST_READ_TIMEOUT_SECONDS)),
        (True, (CONNECT_TIMEOUT_SECONDS, WATCH_SECONDS + WATCH_READ_MARGIN_SECONDS)),
    }


def test_a_watch_that_ends_at_once_with_nothing_in_it_is_paused_not_reopened_in_a_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("brain.watch_list.BACKOFF_FIRST_SECONDS", 0.1)
    opened: list[float] = []

    def answer(**arguments: Any) -> Any:
        opened.append(time.monotonic())
        return EndingStream([])

    api = WiredApi(answer)

    async def scenario() -> None:
        watch = WatchList(api.api, "/api/v1/pods", ViewHandler(), what="pods")
        watch.start(resource_version="5")
        await asyncio.sleep(0.65)
        await watch.stop()

    asyncio.run(scenario())
    # At 0, 0.1, 0.3 (and perhaps 0.7): pauses of 0.1 s, 0.2 s, 0.4 s; never hundreds.
    assert 3 <= len(opened) <= 4, opened
    gaps = [later - earlier for earlier, later in itertools.pairwise(opened)]
    assert all(gap >= 0.09 for gap in gaps), gaps
