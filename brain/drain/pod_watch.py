"""The pods of the node being drained, watched: which of those to evict are gone, and which
arrive during the drain.

One watch per drain (a watch-list where the server serves them: the node's pods first, then
their changes, in one request). A pod counts as gone when the watch reports it deleted or
replaced (new UID), or when a re-list no longer shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from brain.drain.classify import PodRef
from brain.drain.request_counter import RequestCounter, count_request
from brain.drain.watch_stream import (
    INITIAL_EVENTS_END_ANNOTATION,
    close_response,
    response_lines,
    stop_watch_thread,
)

log = logging.getLogger(__name__)

# A watch ends server-side after this long and is resumed from its last resourceVersion.
WATCH_SECONDS = 300
# Backoff for watch failures.
ERROR_BACKOFF_FIRST_SECONDS = 1.0
ERROR_BACKOFF_MAX_SECONDS = 30.0


def list_node_pods(
    core: Any, node: str, counter: RequestCounter | None
) -> tuple[list[dict[str, Any]], str]:
    count_request(counter, "list-pods")
    response = core.list_pod_for_all_namespaces(
        field_selector=f"spec.nodeName={node}", _preload_content=False
    )
    document = json.loads(response.data)
    return list(document.get("items") or []), str(document["metadata"].get("resourceVersion", ""))


class GoneTracker:
    """Which of the pods to evict are still there; fed by the watch and by eviction answers.

    A pod the watch shows arriving on the node that is not tracked yet goes to `on_arrival`
    (the drain decides whether to evict it too, and `track`s it if so).
    """

    def __init__(self, pods: Iterable[PodRef]) -> None:
        self._uids = {pod.key: pod.uid for pod in pods}
        self._gone_events = {key: asyncio.Event() for key in self._uids}
        self.all_gone = asyncio.Event()
        self.on_arrival: Callable[[Mapping[str, Any]], None] | None = None
        if not self._uids:
            self.all_gone.set()

    def track(self, pod: PodRef) -> None:
        """Wait for one more pod to be gone (one that arrived during the drain)."""
        if pod.key in self._uids:
            return
        self._uids[pod.key] = pod.uid
        self._gone_events[pod.key] = asyncio.Event()
        self.all_gone.clear()

    def is_gone(self, pod: PodRef) -> bool:
        return self._gone_events[pod.key].is_set()

    def mark_gone(self, key: tuple[str, str]) -> None:
        event = self._gone_events.get(key)
        if event is None or event.is_set():
            return
        event.set()
        if all(gone.is_set() for gone in self._gone_events.values()):
            self.all_gone.set()

    async def wait_gone(self, pod: PodRef, at_most_seconds: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._gone_events[pod.key].wait(), at_most_seconds)
        except TimeoutError:
            return False
        return True

    def on_watch_event(self, kind: str, pod: Mapping[str, Any]) -> None:
        ref = PodRef.from_pod(pod)
        expected = self._uids.get(ref.key)
        if expected is None:
            if kind in ("ADDED", "MODIFIED") and self.on_arrival is not None:
                self.on_arrival(pod)
            return
        if (kind == "DELETED" and ref.uid == expected) or (expected and ref.uid != expected):
            self.mark_gone(ref.key)

    def on_snapshot(self, present: Mapping[tuple[str, str], str]) -> None:
        """After a re-list: pods absent from the node, or with a new UID, are gone."""
        for key, uid in self._uids.items():
            if key not in present or (uid and present[key] != uid):
                self.mark_gone(key)

    def remaining(self) -> list[tuple[str, str]]:
        return [key for key, event in self._gone_events.items() if not event.is_set()]


class NodePodWatch:
    """A watch on the pods of one node, read in a thread and handed to the event loop.

    The thread resumes the watch from its last resourceVersion when the server ends it, and
    re-lists (reporting a snapshot) when that version has expired (410). stop() shuts the
    socket down so a blocked read returns at once: cancelling a drain leaves no thread behind.

    Without a resourceVersion to start from, the watch itself fetches the node's pods first
    (a watch-list: `sendInitialEvents`, up to the bookmark that ends the initial state), so a
    drain costs one request instead of a list and a watch; a server without watch-lists gets
    the list and the watch. `initial` then resolves to the pods; events that follow wait for
    `attach(tracker)`.
    """

    def __init__(
        self,
        core: Any,
        node: str,
        resource_version: str | None,
        tracker: GoneTracker | None,
        counter: RequestCounter | None,
    ) -> None:
        self._core = core
        self._node = node
        self._resource_version = resource_version
        self._tracker = tracker
        self._backlog: list[tuple[str, tuple[Any, ...]]] = []
        self._counter = counter
        self._loop = asyncio.get_running_loop()
        self.initial: asyncio.Future[list[dict[str, Any]]] = self._loop.create_future()
        self._initial_items: list[dict[str, Any]] | None = None
        self._stopping = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(
            target=self._run, name=f"pitstop-drain-watch-{node}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def attach(self, tracker: GoneTracker) -> None:
        """Hand what the watch saw after its initial state, and all that follows, to `tracker`."""
        self._tracker = tracker
        backlog, self._backlog = self._backlog, []
        for kind, arguments in backlog:
            self._handle(kind, *arguments)

    def _handle(self, kind: str, *arguments: Any) -> None:  # on the event loop
        if self._tracker is None:
            self._backlog.append((kind, arguments))
        elif kind == "snapshot":
            self._tracker.on_snapshot(*arguments)
        else:
            self._tracker.on_watch_event(*arguments)

    def _resolve(self, items: list[dict[str, Any]] | BaseException) -> None:  # on the event loop
        if self.initial.done():
            return
        if isinstance(items, BaseException):
            self.initial.set_exception(items)
        else:
            self.initial.set_result(items)

    def _deliver(self, handler: Callable[..., None], *arguments: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
            self._loop.call_soon_threadsafe(handler, *arguments)

    def _relist(self) -> None:
        items, self._resource_version = list_node_pods(self._core, self._node, self._counter)
        present = {PodRef.from_pod(pod).key: PodRef.from_pod(pod).uid for pod in items}
        self._deliver(self._handle, "snapshot", present)

    def _start_from_a_list(self) -> None:
        items, self._resource_version = list_node_pods(self._core, self._node, self._counter)
        self._deliver(self._resolve, items)

    def _run(self) -> None:
        backoff = ERROR_BACKOFF_FIRST_SECONDS
        while not self._stopping.is_set():
            try:
                if self._resource_version is None:
                    self._watch_list()
                else:
                    self._watch_once()
                backoff = ERROR_BACKOFF_FIRST_SECONDS
            except _NoWatchListError:
                try:
                    self._start_from_a_list()
                except Exception as error:  # the drain fails (and is retried by its caller)
                    self._deliver(self._resolve, error)
                    return
            except _WatchExpiredError:
                try:
                    if self._resource_version is None:  # expired before its initial state
                        self._start_from_a_list()
                    else:
                        self._relist()
                except Exception as error:  # retried below
                    log.warning("re-listing pods of node %s failed: %s", self._node, error)
                    self._stopping.wait(backoff)
            except Exception as error:  # any watch failure: resume after a pause
                if self._stopping.is_set():
                    return
                if self._resource_version is None:  # no initial state: the drain fails
                    self._deliver(self._resolve, error)
                    return
                log.warning("watching pods of node %s failed: %s", self._node, error)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, ERROR_BACKOFF_MAX_SECONDS)

    def _watch_list(self) -> None:
        """The initial state and then the changes, in one request."""
        count_request(self._counter, "watch-pods")
        try:
            response = self._core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={self._node}",
                watch=True,
                allow_watch_bookmarks=True,
                send_initial_events=True,
                resource_version_match="NotOlderThan",
                timeout_seconds=WATCH_SECONDS,
                _preload_content=False,
            )
        except ApiException as error:
            # 400/422: the server does not serve watch-lists (its WatchList feature is off).
            if error.status in (400, 422):
                raise _NoWatchListError from error
            raise
        self._initial_items = []
        self._read(response)

    def _watch_once(self) -> None:
        self._initial_items = None
        count_request(self._counter, "watch-pods")
        try:
            response = self._core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={self._node}",
                watch=True,
                allow_watch_bookmarks=True,
                resource_version=self._resource_version,
                timeout_seconds=WATCH_SECONDS,
                _preload_content=False,
            )
        except ApiException as error:
            if error.status == 410:
                raise _WatchExpiredError from error
            raise
        self._read(response)

    def _read(self, response: Any) -> None:
        self._response = response
        try:
            if self._stopping.is_set():
                return
            for line in response_lines(response):
                if not line:
                    continue
                event = json.loads(line)
                kind = event.get("type")
                pod = event.get("object") or {}
                if kind == "ERROR":
                    if pod.get("code") == 410:
                        raise _WatchExpiredError
                    raise RuntimeError(f"watch error: {pod.get('message', pod)}")
                metadata = pod.get("metadata") or {}
                version = metadata.get("resourceVersion")
                if self._initial_items is not None:  # still reading a watch-list's initial state
                    if kind == "ADDED":
                        self._initial_items.append(pod)
                    elif kind == "BOOKMARK" and (metadata.get("annotations") or {}).get(
                        INITIAL_EVENTS_END_ANNOTATION
                    ):
                        items, self._initial_items = self._initial_items, None
                        self._resource_version = version or ""
                        self._deliver(self._resolve, items)
                    continue
                if version:
                    self._resource_version = version
                if kind != "BOOKMARK":
                    self._deliver(self._handle, "event", kind, pod)
        finally:
            self._response = None
            close_response(response)

    async def stop(self) -> None:
        await stop_watch_thread(self._stopping, self._response, self._thread)


class _WatchExpiredError(Exception):
    """The watch's resourceVersion is too old (410 Gone): re-list."""


class _NoWatchListError(Exception):
    """The server refused `sendInitialEvents`: list, then watch."""
