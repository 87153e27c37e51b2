"""The brain's one view of the Nodes: {name: NodeView}, kept current by a list and a watch.

Why not kopf: kopf handles every Node event as an object of its own (a body, a patch, a
handler call, an index update), and each one woke every window task, which re-planned the whole
cluster: at 5,000 nodes the start took 5 minutes and kubelet status updates kept a core busy.
This watch runs in one thread on the raw response (JsonApi.send), parses one event
(one line) at a time, keeps only the small NodeView of each Node (never the Node itself), and
tells the event loop only of views that changed: a heartbeat or a condition's timestamp leaves
the view equal and costs nothing past the comparison.

The protocol is client-go's reflector: list in pages (`limit`, `continue`), watch from the
list's resourceVersion with bookmarks (which carry the resourceVersion forward while nothing
changes, so a reconnect resumes where it was), list again on 410 Gone (the resourceVersion was
compacted away), reconnect with a backoff on errors. `synced` is set once the first list is in:
no pass plans from an empty node set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from brain.core.node_view import NodeView, node_view_from_object
from brain.kube import JsonApi

log = logging.getLogger("pitstop.node_watch")
PAGE_SIZE = 250
# The API server ends a watch after this long; it is re-opened from the last resourceVersion.
WATCH_SECONDS = 600
CONNECT_TIMEOUT_SECONDS = 10.0
LIST_READ_TIMEOUT_SECONDS = 60.0
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
# Views the thread changed, handed to the event loop in one call: name -> view (None: deleted).
Changes = dict[str, NodeView | None]


class ResourceVersionGoneError(Exception):
    """410 Gone: the resourceVersion to resume from is no longer there; list again."""


class NodeWatch:
    """{name: NodeView} of every Node, with a wake-up for every change that matters."""

    def __init__(
        self,
        api_client: client.ApiClient,
        on_change: Callable[[], None],
        page_size: int = PAGE_SIZE,
        watch_seconds: int = WATCH_SECONDS,
    ) -> None:
        self._api = JsonApi(api_client)
        self._on_change = on_change
        self._page_size = page_size
        self._watch_seconds = watch_seconds
        # Read and written on the event loop only (the thread hands its changes over).
        self.views: dict[str, NodeView] = {}
        self.synced = asyncio.Event()
        # The thread's own copy, to compare each event with (same NodeView objects).
        self._known: dict[str, NodeView] = {}
        self._resource_version = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._response: Any = None
        # Counts, for logs and tests: lists (whole, in pages), watch requests, events read,
        # and events that changed a view.
        self.lists = 0
        self.watches = 0
        self.events = 0
        self.changes = 0

    def nodes(self) -> list[NodeView]:
        return list(self.views.values())

    @property
    def resource_version(self) -> str:
        """Where the watch resumes from (the last event's or bookmark's)."""
        return self._resource_version

    def resume_from(self, resource_version: str) -> None:
        """End the current watch and resume from `resource_version`, as a reconnect would (a
        test plays a compacted one, 410 Gone, with it)."""
        self._resource_version = resource_version
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()

    def start(self) -> None:
        """Start the thread (from the event loop, which is told of the changes)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="pitstop-node-watch", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop the thread: shut the response it reads so the blocked read returns at once."""
        self._stopping.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()
        if self._thread is not None and self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, 10.0)

    # -- the event loop's side ----------------------------------------------------------------

    def _apply(self, changes: Changes, replace_all: bool) -> None:
        if replace_all:
            self.views = {name: view for name, view in changes.items() if view is not None}
        else:
            for name, view in changes.items():
                if view is None:
                    self.views.pop(name, None)
                else:
                    self.views[name] = view
        first = not self.synced.is_set()
        self.synced.set()
        if changes or first:
            self._on_change()

    def _hand_over(self, changes: Changes, replace_all: bool = False) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: the brain is stopping
            self._loop.call_soon_threadsafe(self._apply, changes, replace_all)

    # -- the thread's side --------------------------------------------------------------------

    def _run(self) -> None:
        backoff = BACKOFF_FIRST_SECONDS
        while not self._stopping.is_set():
            try:
                if not self._resource_version:
                    self._list()
                if self._watch():
                    backoff = BACKOFF_FIRST_SECONDS  # it delivered: a new one at once
                else:
                    self._stopping.wait(backoff)  # ended empty-handed: never a tight loop
                    backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
            except ResourceVersionGoneError:
                log.info(
                    "node watch: resourceVersion %s is gone, listing again", self._resource_version
                )
                self._resource_version = ""
            except Exception as error:
                if self._stopping.is_set():
                    break
                log.warning("node watch failed, again in %.1f s: %r", backoff, error)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
            finally:
                self._response = None

    def _list(self) -> None:
        """Every Node, in pages; the views that differ from the known ones go to the loop (all
        of them on the first list, which sets `synced`)."""
        started = time.monotonic()
        fresh: dict[str, NodeView] = {}
        token: str | None = None
        pages = 0
        resource_version = ""
        while True:
            query: dict[str, Any] = {"limit": self._page_size}
            if token:
                query["continue"] = token
            try:
                response = self._api.send(
                    "GET",
                    "/api/v1/nodes",
                    query=query,
                    timeout=(CONNECT_TIMEOUT_SECONDS, LIST_READ_TIMEOUT_SECONDS),
                )
            except ApiException as error:
                if error.status == 410 and token:  # the continue token expired: start over
                    fresh, token, pages = {}, None, 0
                    continue
                raise
            self._response = response
            try:
                page = json.loads(response.data)
            finally:
                _close(response)
                self._response = None
            pages += 1
            for item in page.get("items") or ():
                view = node_view_from_object(item)
                fresh[view.name] = view
            metadata = page.get("metadata") or {}
            resource_version = str(metadata.get("resourceVersion") or "")
            token = metadata.get("continue") or None
            del page
            if not token or self._stopping.is_set():
                break
        first = self.lists == 0
        self.lists += 1
        if first:
            changes: Changes = dict(fresh)
        else:
            changes = {name: view for name, view in fresh.items() if self._known.get(name) != view}
            changes.update({name: None for name in self._known if name not in fresh})
        self._known = fresh
        self._resource_version = resource_version
        log.info(
            "node watch: listed %d nodes in %d page(s) in %.1f s (%d changed)",
            len(fresh),
            pages,
            time.monotonic() - started,
            len(changes),
        )
        self._hand_over(changes, replace_all=first)

    def _watch(self) -> bool:
        """Watch from the known resourceVersion until the server ends the watch; whether it
        delivered anything (an event or a bookmark)."""
        started = time.monotonic()
        delivered = False
        try:
            response = self._api.send(
                "GET",
                "/api/v1/nodes",
                query={
                    "watch": True,
                    "allowWatchBookmarks": True,
                    "resourceVersion": self._resource_version,
                    "timeoutSeconds": self._watch_seconds,
                },
                timeout=(CONNECT_TIMEOUT_SECONDS, self._watch_seconds + 30.0),
            )
        except ApiException as error:
            if error.status == 410:
                raise ResourceVersionGoneError() from error
            raise
        self._response = response
        self.watches += 1
        try:
            for line in _lines(response):
                if self._stopping.is_set():
                    return True
                self._event(json.loads(line))
                delivered = True
        finally:
            _close(response)
        return delivered or time.monotonic() - started > 1.0

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        node = event.get("object") or {}
        self.events += 1
        if kind == "ERROR":
            if node.get("code") == 410:
                raise ResourceVersionGoneError()
            raise RuntimeError(f"watch error: {node.get('message') or node}")
        resource_version = str((node.get("metadata") or {}).get("resourceVersion") or "")
        if kind == "BOOKMARK":
            self._resource_version = resource_version or self._resource_version
            return
        name = str((node.get("metadata") or {}).get("name") or "")
        if kind == "DELETED":
            view: NodeView | None = None
            changed = self._known.pop(name, None) is not None
        else:
            view = node_view_from_object(node)
            changed = self._known.get(name) != view
            if changed:
                self._known[name] = view
        if resource_version:
            self._resource_version = resource_version
        if changed:
            self.changes += 1
            self._hand_over({name: view})


def _lines(response: Any) -> Iterator[bytes]:
    """A streamed watch response, one JSON event per line (json.loads takes bytes)."""
    rest = b""
    for chunk in cast(Iterator[bytes], response.stream(amt=None, decode_content=False)):
        *lines, rest = (rest + chunk).split(b"\n")
        yield from (line for line in lines if line.strip())
    if rest.strip():
        yield rest


def _close(response: Any) -> None:
    """Give a finished response's connection back (errors: it is gone already)."""
    with contextlib.suppress(Exception):
        response.close()
        response.release_conn()
