"""The node's pods watched: the tracker of gone and arriving pods, the watch thread on a fake
API (watch-lists, expired versions, stopping)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from brain.drain.classify import PodRef
from brain.drain.pod_watch import GoneTracker, NodePodWatch
from tests.brain.drain.fakes import FakeStream, WiredApi, pod, wired


def test_the_tracker_counts_a_pod_gone_when_deleted_or_replaced() -> None:
    async def scenario() -> list[tuple[str, str]]:
        first, second, third = (
            PodRef("n", "a", "ua"),
            PodRef("n", "b", "ub"),
            PodRef("n", "c", "uc"),
        )
        tracker = GoneTracker([first, second, third])
        tracker.on_watch_event("MODIFIED", pod("a", namespace="n", uid="ua"))
        assert not tracker.is_gone(first)
        tracker.on_watch_event("DELETED", pod("a", namespace="n", uid="ua"))
        tracker.on_watch_event("ADDED", pod("b", namespace="n", uid="ub-new"))
        tracker.on_watch_event("DELETED", pod("unrelated", namespace="n"))
        assert tracker.is_gone(first) and tracker.is_gone(second)
        assert not tracker.all_gone.is_set()
        assert await tracker.wait_gone(third, 0.01) is False
        tracker.on_snapshot({("n", "c"): "uc"})
        assert not tracker.is_gone(third)
        remaining = tracker.remaining()
        tracker.on_snapshot({})
        assert tracker.all_gone.is_set()
        return remaining

    assert asyncio.run(scenario()) == [("n", "c")]


def test_the_tracker_hands_arrivals_over_and_waits_for_those_it_is_given() -> None:
    async def scenario() -> None:
        known = PodRef("n", "a", "ua")
        tracker = GoneTracker([known])
        arrived: list[str] = []
        tracker.on_arrival = lambda pod: arrived.append(pod["metadata"]["name"])
        tracker.on_watch_event("ADDED", pod("late", namespace="n", uid="ul"))
        tracker.on_watch_event("DELETED", pod("other", namespace="n", uid="uo"))
        tracker.on_watch_event("MODIFIED", pod("a", namespace="n", uid="ua"))
        assert arrived == ["late"]  # not the deleted pod, not a tracked one
        tracker.on_watch_event("DELETED", pod("a", namespace="n", uid="ua"))
        assert tracker.all_gone.is_set()
        late = PodRef("n", "late", "ul")
        tracker.track(late)
        assert not tracker.all_gone.is_set() and tracker.remaining() == [("n", "late")]
        tracker.on_watch_event("MODIFIED", pod("late", namespace="n", uid="ul"))
        assert arrived == ["late"]  # tracked now: no second hand-over
        tracker.on_watch_event("DELETED", pod("late", namespace="n", uid="ul"))
        assert tracker.all_gone.is_set()

    asyncio.run(scenario())


class FakePodServer:
    """The node's pods at resourceVersion 50, listed, or watched (`watch`, per test); a server
    without watch-lists refuses `sendInitialEvents` (422)."""

    def __init__(self, serves_watch_list: bool, pods: list[dict[str, Any]]) -> None:
        self.serves_watch_list = serves_watch_list
        self.pods = pods
        self.calls: list[dict[str, Any]] = []
        self.streams: list[FakeStream] = []

    def list_pod_for_all_namespaces(self, **arguments: Any) -> Any:
        self.calls.append(arguments)
        if not arguments.get("watch"):
            return SimpleNamespace(
                data=json.dumps({"metadata": {"resourceVersion": "50"}, "items": self.pods})
            )
        if arguments.get("send_initial_events") and not self.serves_watch_list:
            raise ApiException(status=422, reason="sendInitialEvents is forbidden")
        stream = self.watch(arguments)
        self.streams.append(stream)
        return stream

    def watch(self, arguments: dict[str, Any]) -> FakeStream:
        raise NotImplementedError


class FakeExpiringCore(FakePodServer):
    """First watch: an expired resourceVersion (410 event); then the node's pods again (a
    watch-list, or on a server without them a refused watch-list, a list and a watch); then
    quiet."""

    def __init__(self, serves_watch_list: bool, pods: list[dict[str, Any]]) -> None:
        super().__init__(serves_watch_list, pods)
        self.quiet_watch = threading.Event()

    def watch(self, arguments: dict[str, Any]) -> FakeStream:
        if len(self.streams) == 0:
            return FakeStream(
                [
                    {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
                    {"type": "ERROR", "object": {"kind": "Status", "code": 410}},
                ]
            )
        self.quiet_watch.set()
        if arguments.get("send_initial_events"):
            end = {"metadata": {"resourceVersion": "50", "annotations": INITIAL_EVENTS_END}}
            initial = [{"type": "ADDED", "object": item} for item in self.pods]
            return FakeStream([*initial, {"type": "BOOKMARK", "object": end}])
        return FakeStream([])


INITIAL_EVENTS_END = {"k8s.io/initial-events-end": "true"}


@pytest.mark.parametrize("serves_watch_list", [True, False])
def test_the_watch_fetches_the_pods_again_when_its_version_expired_and_stops_at_once(
    serves_watch_list: bool,
) -> None:
    survivor = pod("b", namespace="n", uid="ub")
    core = FakeExpiringCore(serves_watch_list, [survivor])
    api = WiredApi(core.list_pod_for_all_namespaces)

    async def scenario() -> tuple[bool, bool, float]:
        gone, kept = PodRef("n", "a", "ua"), PodRef("n", "b", "ub")
        tracker = GoneTracker([gone, kept])
        watch = NodePodWatch(api.api, "node-1")
        watch.attach(tracker)
        watch.start("10")
        await tracker.wait_gone(gone, 5)
        assert await asyncio.to_thread(core.quiet_watch.wait, 5)
        started = time.monotonic()
        await watch.stop()
        return tracker.is_gone(gone), tracker.is_gone(kept), time.monotonic() - started

    gone, kept, stop_seconds = asyncio.run(scenario())
    assert gone and not kept
    assert stop_seconds < 2
    watches = [call for call in core.calls if call.get("watch")]
    assert all(call["field_selector"] == "spec.nodeName=node-1" for call in core.calls)
    if serves_watch_list:
        assert [call.get("resource_version") for call in watches] == ["10", None]
        assert watches[1]["send_initial_events"] is True
        assert api.requests == {"watch pods": 2}
    else:
        assert [call.get("resource_version") for call in watches] == ["10", None, "50"]
        assert api.requests == {"watch pods": 3, "list pods": 1}
    assert all(stream.closed for stream in core.streams)


class FailingCore:
    """Every request refused (the brain may not list pods, say)."""

    def __init__(self) -> None:
        self.calls = 0

    def list_pod_for_all_namespaces(self, **arguments: Any) -> Any:
        self.calls += 1
        raise ApiException(status=403, reason="Forbidden")


@pytest.mark.parametrize("watch_lists", [True, False])
def test_a_watch_that_cannot_fetch_the_pods_fails_the_drain_and_stops(watch_lists: bool) -> None:
    core = FailingCore()

    async def scenario() -> tuple[BaseException | None, float]:
        watch = NodePodWatch(wired(core), "node-1", watch_lists=watch_lists)
        watch.start()
        try:
            await asyncio.wait_for(watch.initial, 5)
        except ApiException as error:
            failure: BaseException | None = error
        else:
            failure = None
        started = time.monotonic()
        await watch.stop()
        return failure, time.monotonic() - started

    failure, stop_seconds = asyncio.run(scenario())
    assert isinstance(failure, ApiException) and failure.status == 403
    assert stop_seconds < 2 and core.calls == 1, "stopped during its pause: no second request"


class FakeWatchListCore(FakePodServer):
    """A server with watch-lists (initial pods, the end bookmark, then a deletion), or without
    (`sendInitialEvents` refused with 422: a list, then a watch from its resourceVersion)."""

    def watch(self, arguments: dict[str, Any]) -> FakeStream:
        lines: list[dict[str, Any]] = []
        if arguments.get("send_initial_events"):
            lines += [{"type": "ADDED", "object": item} for item in self.pods]
            end = {"metadata": {"resourceVersion": "20", "annotations": INITIAL_EVENTS_END}}
            lines.append({"type": "BOOKMARK", "object": end})
        lines.append({"type": "DELETED", "object": self.pods[0]})
        return FakeStream(lines)


@pytest.mark.parametrize("serves_watch_list", [True, False])
def test_a_watch_list_reads_the_pods_and_then_watches_them_in_one_request(
    serves_watch_list: bool,
) -> None:
    first, second = pod("a", namespace="n", uid="ua"), pod("b", namespace="n", uid="ub")
    core = FakeWatchListCore(serves_watch_list, [first, second])
    api = WiredApi(core.list_pod_for_all_namespaces)

    async def scenario() -> tuple[list[str], bool, bool]:
        watch = NodePodWatch(api.api, "node-1")
        watch.start()
        items = await asyncio.wait_for(watch.initial, 5)
        # The deletion may already have arrived: it waits for the tracker, then reaches it.
        await asyncio.sleep(0.1)
        gone, kept = PodRef("n", "a", "ua"), PodRef("n", "b", "ub")
        tracker = GoneTracker([gone, kept])
        watch.attach(tracker)
        await tracker.wait_gone(gone, 5)
        await watch.stop()
        return (
            [item["metadata"]["name"] for item in items],
            tracker.is_gone(gone),
            (tracker.is_gone(kept)),
        )

    names, gone, kept = asyncio.run(scenario())
    assert names == ["a", "b"]
    assert gone and not kept
    watches = [call for call in core.calls if call.get("watch")]
    if serves_watch_list:
        assert api.requests == {"watch pods": 1}
        assert watches[0]["resource_version_match"] == "NotOlderThan"
    else:
        assert api.requests == {"watch pods": 2, "list pods": 1}
        assert watches[-1]["resource_version"] == "50"
    assert all(call["field_selector"] == "spec.nodeName=node-1" for call in core.calls)
    assert all(stream.closed for stream in core.streams)
