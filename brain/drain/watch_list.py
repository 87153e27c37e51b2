"""One watch-list client for the drain's watches (the node's pods, PodDisruptionBudgets).

A watch-list delivers the current state first (`sendInitialEvents`, up to the bookmark that
ends it) and then the changes, in one request. A server that refuses it (400/422: its WatchList
feature is off) gets a list and a watch from the list's resourceVersion instead. The client
resumes the watch from its last resourceVersion when the server ends it, fetches the whole
state again when that version has expired (410), and retries other failures with a doubling
pause (1 s to 30 s), telling its handler each time.

It runs in its own thread on the raw response (JsonApi.send), because the kubernetes
client's Watch cannot be interrupted; `stop()` shuts the response's socket, so the blocked read
returns at once and no thread is left behind. Everything the handler hears, it hears on the
event loop that started the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, cast

from kubernetes.client.exceptions import ApiException
from kubernetes.watch import watch as kubernetes_watch

from brain.kube import JsonApi

log = logging.getLogger(__name__)

# The bookmark annotation that ends a watch-list's initial state (sendInitialEvents).
INITIAL_EVENTS_END_ANNOTATION = "k8s.io/initial-events-end"
# A watch ends server-side after this long and is resumed from its last resourceVersion.
WATCH_SECONDS = 300
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0

# The client's own line splitter for streamed watch responses (it is untyped).
response_lines = cast(Callable[[Any], Iterable[str]], kubernetes_watch.iter_resp_lines)


class WatchHandler(Protocol):
    """What a watch tells its user, always on the event loop."""

    def on_state(self, objects: list[dict[str, Any]]) -> None:
        """The complete current state: first, and again after the watch's version expired
        (an object not in it is gone)."""

    def on_change(self, kind: str, item: dict[str, Any]) -> None:
        """ADDED, MODIFIED or DELETED, after the state."""

    def on_failure(self, error: Exception, has_state: bool) -> None:
        """A request failed (`has_state`: a state was delivered or given before); the client
        tries again after a pause unless told to `give_up`."""


class _ExpiredError(Exception):
    """The watch's resourceVersion is too old (410 Gone): fetch the whole state again."""


class WatchList:
    """A watch-list on one kind of object: the collection at `path` (`/api/v1/pods`, say),
    narrowed by `query` (the API's parameters: `fieldSelector`). Each request is counted where
    the brain's ApiClient counts them all (brain/kube.py). `watch_lists=False` lists and watches
    from the start.
    """

    def __init__(
        self,
        api: JsonApi,
        path: str,
        handler: WatchHandler,
        *,
        what: str,
        query: Mapping[str, Any] | None = None,
        thread_name: str = "pitstop-drain-watch",
        watch_lists: bool = True,
    ) -> None:
        self._api = api
        self._path = path
        self._handler = handler
        self._what = what
        self._query = dict(query or {})
        self._thread_name = thread_name
        self._watch_lists = watch_lists
        self._resource_version: str | None = None  # None: no state yet (or it expired)
        self._has_state = False
        self._initial: list[dict[str, Any]] | None = None  # a watch-list's state, being read
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._response: Any = None
        # A request failed or the watch's version expired: changes may have been missed
        # between the state delivered and the one after.
        self.interrupted = False

    def start(self, resource_version: str | None = None) -> None:
        """Start the thread (on the event loop): from a fresh state, or resuming the watch from
        `resource_version` (the caller listed already and holds that state)."""
        if self._thread is not None or self._stopping.is_set():
            return
        if resource_version is not None:
            self._resource_version, self._has_state = resource_version, True
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
        self._thread.start()

    def give_up(self) -> None:
        """No more requests (the thread ends at once); from any thread."""
        self._stopping.set()

    async def stop(self) -> None:
        """Give up, shut the response being read, and wait for the thread (10 s at most)."""
        self._stopping.set()
        if self._response is not None:
            with contextlib.suppress(Exception):
                self._response.shutdown()
        if self._thread is not None and self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, 10.0)

    def _deliver(self, handler: Callable[..., None], *arguments: Any) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
                self._loop.call_soon_threadsafe(handler, *arguments)

    def _run(self) -> None:
        backoff = BACKOFF_FIRST_SECONDS
        while not self._stopping.is_set():
            try:
                if self._resource_version is None:
                    self._fetch_state()
                else:
                    self._read(self._open(resourceVersion=self._resource_version))
                backoff = BACKOFF_FIRST_SECONDS
            except _ExpiredError:
                self.interrupted = True
                self._resource_version = None
            except Exception as error:
                if self._stopping.is_set():
                    return
                self.interrupted = True
                self._deliver(self._handler.on_failure, error, self._has_state)
                log.warning("watching %s failed (again in %.0f s): %s", self._what, backoff, error)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)

    def _fetch_state(self) -> None:
        """The state, then the changes: a watch-list, else a list and a watch."""
        if self._watch_lists:
            try:
                response = self._open(sendInitialEvents=True, resourceVersionMatch="NotOlderThan")
            except ApiException as error:
                if error.status not in (400, 422):
                    raise
                self._watch_lists = False  # no watch-lists here: a list and a watch will do
                return
            self._initial = []
            self._read(response)
            return
        document = self._api.get(self._path, self._query)
        self._resource_version = str((document.get("metadata") or {}).get("resourceVersion", ""))
        self._state(list(document.get("items") or []))
        self._read(self._open(resourceVersion=self._resource_version))

    def _state(self, objects: list[dict[str, Any]]) -> None:
        self._has_state = True
        self._deliver(self._handler.on_state, objects)

    def _open(self, **since: Any) -> Any:
        try:
            query = {
                "watch": True,
                "allowWatchBookmarks": True,
                "timeoutSeconds": WATCH_SECONDS,
                **self._query,
                **since,
            }
            return self._api.send("GET", self._path, query=query)
        except ApiException as error:
            if error.status == 410:
                raise _ExpiredError from error
            raise

    def _read(self, response: Any) -> None:
        self._response = response
        try:
            if self._stopping.is_set():
                return
            for line in response_lines(response):
                if line:
                    self._event(json.loads(line))
        finally:
            self._initial = None  # a watch-list ended before its state: it starts anew
            self._response = None
            with contextlib.suppress(Exception):  # give the connection back; gone already?
                response.close()
                response.release_conn()

    def _event(self, event: Mapping[str, Any]) -> None:
        kind, item = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if item.get("code") == 410:
                raise _ExpiredError
            raise ApiException(status=item.get("code"), reason=str(item.get("message", item)))
        metadata = item.get("metadata") or {}
        version = metadata.get("resourceVersion")
        if self._initial is not None:  # still reading a watch-list's state
            if kind == "ADDED":
                self._initial.append(item)
            elif kind == "BOOKMARK" and INITIAL_EVENTS_END_ANNOTATION in (
                metadata.get("annotations") or {}
            ):
                objects, self._initial = self._initial, None
                self._resource_version = version or ""
                self._state(objects)
            return
        if version:
            self._resource_version = version
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self._deliver(self._handler.on_change, kind, item)
