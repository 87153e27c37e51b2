"""The pods of the node being drained, watched: which of those to evict are gone, and which
arrive during the drain.

One watch per drain through the brain's watch client (brain/watch_list.py): the node's pods
first, then their changes, in one request where the server serves watch-lists. A pod counts as
gone when the watch reports it deleted or replaced (new UID), or when a fresh state (after the
watch's version expired) no longer shows it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from brain.drain.classify import PodRef
from brain.kube import JsonApi
from brain.watch_list import object_watch


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
    """The watch on the pods of one node, handed to a GoneTracker once the drain has one.

    `initial` resolves to the node's pods (the first state), or to the error that kept the
    watch from fetching them (the drain then fails and is retried by its caller). What the
    watch sees after that waits for `attach(tracker)`; a later state (the watch's version
    expired) reaches the tracker as a snapshot.
    """

    def __init__(self, api: JsonApi, node: str, watch_lists: bool = True) -> None:
        self._tracker: GoneTracker | None = None
        self._backlog: list[tuple[str, tuple[Any, ...]]] = []
        self.initial: asyncio.Future[list[dict[str, Any]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._watch = object_watch(
            api,
            "/api/v1/pods",
            self,
            what=f"pods of node {node}",
            query={"fieldSelector": f"spec.nodeName={node}"},
            thread_name=f"pitstop-drain-watch-{node}",
            watch_lists=watch_lists,
        )

    def start(self, resource_version: str | None = None) -> None:
        """Watch from a fresh state (`initial`), or from `resource_version` (pods known)."""
        if resource_version is not None:
            self.initial.set_result([])  # the caller has the pods: nothing to wait for
        self._watch.start(resource_version)

    async def stop(self) -> None:
        await self._watch.stop()

    def attach(self, tracker: GoneTracker) -> None:
        """Hand what the watch saw after its initial state, and all that follows, to `tracker`."""
        self._tracker = tracker
        backlog, self._backlog = self._backlog, []
        for kind, arguments in backlog:
            self._handle(kind, *arguments)

    def on_state(self, objects: list[dict[str, Any]]) -> None:
        if not self.initial.done():
            self.initial.set_result(objects)
            return
        present = {ref.key: ref.uid for ref in map(PodRef.from_pod, objects)}
        self._handle("snapshot", present)

    def on_change(self, kind: str, item: dict[str, Any]) -> None:
        self._handle("event", kind, item)

    def on_failure(self, error: Exception, has_state: bool) -> None:
        if not has_state and not self.initial.done():  # no pods to drain from: the drain fails
            self.initial.set_exception(error)

    def _handle(self, kind: str, *arguments: Any) -> None:
        if self._tracker is None:
            self._backlog.append((kind, arguments))
        elif kind == "snapshot":
            self._tracker.on_snapshot(*arguments)
        else:
            self._tracker.on_watch_event(*arguments)
