"""The brain's one watch client: the current state of one kind of object, then its changes.

Two users: the Node watch (brain/node_watch.py) and the drain's watches (a node's pods,
PodDisruptionBudgets: brain/drain/pod_watch.py, budget_watch.py).

The state comes one of two ways:
- a watch-list (`sendInitialEvents`, up to the bookmark that ends it): the state and then the
  changes, in one request. A server that refuses it (400/422: its WatchList feature is off)
  gets a list and a watch instead, from then on.
- a list, whole or in pages (`page_size`: `limit`, `continue`; started over when the continue
  token expired), and a watch from the list's resourceVersion.
The watch asks for bookmarks (they carry the resourceVersion forward while nothing changes), is
resumed from its last resourceVersion when the server ends it, and the state is fetched again
when that version has expired (410 Gone, as the answer's status or as an ERROR event). Other
failures are retried after a doubling pause (1 s to 30 s), the handler told each time; so is a
watch that ended at once with nothing in it: never a tight loop.

It runs in its own thread on the raw response (JsonApi.send): the kubernetes client's Watch
cannot be interrupted, and `stop()` shuts the response's socket, so the blocked read returns at
once and no thread is left behind. Every request has a connect and a read timeout: a connection
that died without a word ends the read instead of holding the watch forever.

The handler runs in that thread too, so that no object is parsed on the event loop (5,000
Nodes): it turns each object into what it keeps (`parse`), decides what is worth telling, and
hands that to the loop (`WatchList.on_loop`). `object_watch` builds a watch whose handler hears
whole objects on the event loop (the drain's watches).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, Protocol, TypeVar, cast

from kubernetes.client.exceptions import ApiException

from brain.kube import JsonApi

log = logging.getLogger("pitstop.watch")
T = TypeVar("T")

# The bookmark annotation that ends a watch-list's initial state (sendInitialEvents).
INITIAL_EVENTS_END_ANNOTATION = "k8s.io/initial-events-end"
# A watch ends server-side after this long and is resumed from its last resourceVersion.
WATCH_SECONDS = 300
CONNECT_TIMEOUT_SECONDS = 10.0
# A list's read: one page (or one whole list) must come within this.
LIST_READ_TIMEOUT_SECONDS = 60.0
# A watch's read waits this long past the watch's own end before it counts the connection dead.
WATCH_READ_MARGIN_SECONDS = 30.0
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0
# A watch that ended sooner than this with nothing in it waits a pause before the next.
EMPTY_WATCH_SECONDS = 1.0


class WatchHandler(Protocol[T]):
    """What a watch tells its user, in the watch's thread: what is slow (parsing, comparing)
    happens there, and only what the event loop needs is handed to it (`WatchList.on_loop`)."""

    def parse(self, item: dict[str, Any]) -> T:
        """What the handler keeps of one object: the object itself, or a small view of it."""
        ...

    def on_state(self, objects: list[T]) -> None:
        """The complete current state: first, and again after the watch's version expired (an
        object not in it is gone)."""

    def on_change(self, kind: str, item: T) -> None:
        """ADDED, MODIFIED or DELETED, after the state."""

    def on_failure(self, error: Exception, has_state: bool) -> None:
        """A request failed (`has_state`: a state was delivered or given before); the watch
        tries again after a pause unless told to `give_up`."""


class _ExpiredError(Exception):
    """The watch's resourceVersion is too old (410 Gone): fetch the whole state again."""


class WatchList(Generic[T]):
    """A watch on one kind of object: the collection at `path` (`/api/v1/pods`, say), narrowed
    by `query` (the API's parameters: `fieldSelector`). Every request is counted where the
    brain's ApiClient counts them all (brain/kube.py).

    `watch_lists=False` lists and watches from the start; `page_size` lists in pages of that
    many objects (None: one whole list).
    """

    def __init__(
        self,
        api: JsonApi,
        path: str,
        handler: WatchHandler[T],
        *,
        what: str,
        query: Mapping[str, Any] | None = None,
        thread_name: str = "pitstop-watch",
        watch_lists: bool = True,
        page_size: int | None = None,
        watch_seconds: int = WATCH_SECONDS,
    ) -> None:
        self._api = api
        self._path = path
        self._handler = handler
        self._what = what
        self._query = dict(query or {})
        self._thread_name = thread_name
        self._watch_lists = watch_lists
        self._page_size = page_size
        self._watch_seconds = watch_seconds
        self._resource_version: str | None = None  # None: no state yet (or it expired)
        self._has_state = False
        self._initial: list[T] | None = None  # a watch-list's state, being read
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._response: Any = None
        # A request failed or the watch's version expired: changes may have been missed
        # between the state delivered and the one after.
        self.interrupted = False
        # Counts, for logs and tests: states fetched (lists, watch-lists), watch requests
        # opened, events read.
        self.lists = 0
        self.watches = 0
        self.events = 0

    @property
    def resource_version(self) -> str:
        """Where the watch resumes from (the last event's or bookmark's); "" without a state."""
        return self._resource_version or ""

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

    def resume_from(self, resource_version: str) -> None:
        """End the current request and watch from `resource_version`, as a reconnect would (a
        test plays a dropped connection with it)."""
        self._resource_version = resource_version
        self._shut()

    async def stop(self) -> None:
        """Give up, shut the response being read, and wait for the thread (10 s at most)."""
        self._stopping.set()
        self._shut()
        if self._thread is not None and self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, 10.0)

    def on_loop(self, callback: Callable[..., None], *arguments: Any) -> None:
        """Call `callback(*arguments)` on the event loop that started the watch (from the
        watch's thread: the handler's way to the loop)."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
                self._loop.call_soon_threadsafe(callback, *arguments)

    def _shut(self) -> None:
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = BACKOFF_FIRST_SECONDS
        while not self._stopping.is_set():
            try:
                if self._resource_version is None:
                    worth_it = self._fetch_state()
                else:
                    worth_it = self._read(self._open(resourceVersion=self._resource_version))
                if worth_it:
                    backoff = BACKOFF_FIRST_SECONDS
                    continue
                self._stopping.wait(backoff)  # ended at once, empty: never a tight loop
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
            except _ExpiredError:
                log.info("watching %s: its resourceVersion expired, fetching all", self._what)
                self.interrupted = True
                self._resource_version = None
            except Exception as error:
                if self._stopping.is_set():
                    return
                self.interrupted = True
                self._handler.on_failure(error, self._has_state)
                log.warning("watching %s failed (again in %.0f s): %s", self._what, backoff, error)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)

    def _fetch_state(self) -> bool:
        """The state, then the changes: a watch-list, else a list and a watch. Whether it was
        worth it (see `_read`)."""
        if self._watch_lists:
            try:
                response = self._open(sendInitialEvents=True, resourceVersionMatch="NotOlderThan")
            except ApiException as error:
                if error.status not in (400, 422):
                    raise
                self._watch_lists = False  # no watch-lists here: a list and a watch will do
                return True
            self._initial = []
            return self._read(response)
        self._list()
        if self._resource_version is None:  # stopped during the list
            return True
        return self._read(self._open(resourceVersion=self._resource_version))

    def _list(self) -> None:
        """The whole collection (in pages with a `page_size`), parsed page by page: no more
        than one page of whole objects is held at a time."""
        started = time.monotonic()
        objects: list[T] = []
        token = ""
        pages = 0
        while True:
            query = dict(self._query)
            if self._page_size:
                query["limit"] = self._page_size
            if token:
                query["continue"] = token
            try:
                page = self._get(query)
            except ApiException as error:
                if error.status == 410 and token:  # the continue token expired: start over
                    objects, token, pages = [], "", 0
                    continue
                raise
            if self._stopping.is_set():
                return
            pages += 1
            objects.extend(self._handler.parse(item) for item in page.get("items") or ())
            metadata = page.get("metadata") or {}
            token = str(metadata.get("continue") or "")
            if not token:
                break
            del page
        self.lists += 1
        log.log(
            logging.INFO if self._page_size else logging.DEBUG,
            "listed %d %s in %d page(s) in %.1f s",
            len(objects),
            self._what,
            pages,
            time.monotonic() - started,
        )
        self._resource_version = str(metadata.get("resourceVersion") or "")
        self._state(objects)

    def _get(self, query: dict[str, Any]) -> Any:
        """One list request, read whole (`stop()` can shut it while it is read)."""
        response = self._api.send(
            "GET",
            self._path,
            query=query,
            timeout=(CONNECT_TIMEOUT_SECONDS, LIST_READ_TIMEOUT_SECONDS),
        )
        self._response = response
        try:
            if self._stopping.is_set():
                return {}
            data = response.data
            return json.loads(data) if data else {}
        finally:
            self._response = None
            _close(response)

    def _state(self, objects: list[T]) -> None:
        self._has_state = True
        self._handler.on_state(objects)

    def _open(self, **since: Any) -> Any:
        query = {
            "watch": True,
            "allowWatchBookmarks": True,
            "timeoutSeconds": self._watch_seconds,
            **self._query,
            **since,
        }
        read_timeout = self._watch_seconds + WATCH_READ_MARGIN_SECONDS
        try:
            response = self._api.send(
                "GET", self._path, query=query, timeout=(CONNECT_TIMEOUT_SECONDS, read_timeout)
            )
        except ApiException as error:
            if error.status == 410:
                raise _ExpiredError from error
            raise
        self.watches += 1
        return response

    def _read(self, response: Any) -> bool:
        """Read a watch until it ends; whether it was worth it: anything came, or it lasted
        (a watch that ends at once with nothing in it is paused after)."""
        started = time.monotonic()
        read_any = False
        self._response = response
        try:
            for line in response_lines(response):
                if self._stopping.is_set():
                    return True
                read_any = True
                self._event(json.loads(line))
        finally:
            self._initial = None  # a watch-list ended before its state: it starts anew
            self._response = None
            _close(response)
        return read_any or time.monotonic() - started > EMPTY_WATCH_SECONDS

    def _event(self, event: Mapping[str, Any]) -> None:
        self.events += 1
        kind, item = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if item.get("code") == 410:
                raise _ExpiredError
            raise ApiException(status=item.get("code"), reason=str(item.get("message", item)))
        metadata = item.get("metadata") or {}
        version = metadata.get("resourceVersion")
        if self._initial is not None:  # still reading a watch-list's state
            if kind == "ADDED":
                self._initial.append(self._handler.parse(item))
            elif kind == "BOOKMARK" and INITIAL_EVENTS_END_ANNOTATION in (
                metadata.get("annotations") or {}
            ):
                objects, self._initial = self._initial, None
                self._resource_version = str(version or "")
                self.lists += 1
                self._state(objects)
            return
        if version:
            self._resource_version = str(version)
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self._handler.on_change(kind, self._handler.parse(item))


def response_lines(response: Any) -> Iterator[bytes]:
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


class ObjectHandler(Protocol):
    """What a watch of whole objects tells its user, on the event loop (the drain's watches:
    a node's pods, the budgets; a few objects each, so the loop can take them whole)."""

    def on_state(self, objects: list[dict[str, Any]]) -> None:
        """The complete current state (see WatchHandler.on_state)."""

    def on_change(self, kind: str, item: dict[str, Any]) -> None:
        """ADDED, MODIFIED or DELETED, after the state."""

    def on_failure(self, error: Exception, has_state: bool) -> None:
        """A request failed (see WatchHandler.on_failure)."""


class _ToTheLoop:
    """The WatchHandler of an `object_watch`: every object, whole, to the loop."""

    def __init__(self, handler: ObjectHandler) -> None:
        self.handler = handler
        self.watch: WatchList[dict[str, Any]] | None = None

    def parse(self, item: dict[str, Any]) -> dict[str, Any]:
        return item

    def on_state(self, objects: list[dict[str, Any]]) -> None:
        self._hand(self.handler.on_state, objects)

    def on_change(self, kind: str, item: dict[str, Any]) -> None:
        self._hand(self.handler.on_change, kind, item)

    def on_failure(self, error: Exception, has_state: bool) -> None:
        self._hand(self.handler.on_failure, error, has_state)

    def _hand(self, callback: Callable[..., None], *arguments: Any) -> None:
        if self.watch is not None:
            self.watch.on_loop(callback, *arguments)


def object_watch(
    api: JsonApi,
    path: str,
    handler: ObjectHandler,
    *,
    what: str,
    query: Mapping[str, Any] | None = None,
    thread_name: str = "pitstop-watch",
    watch_lists: bool = True,
) -> WatchList[dict[str, Any]]:
    """A watch (one watch-list request where the server serves them) whose `handler` hears
    whole objects on the event loop that starts it."""
    relay = _ToTheLoop(handler)
    watch = WatchList(
        api, path, relay, what=what, query=query, thread_name=thread_name, watch_lists=watch_lists
    )
    relay.watch = watch
    return watch
