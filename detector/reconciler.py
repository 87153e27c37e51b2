"""The detector's loop: make the Node say what the sentinel file says, with one PATCH per change.

Two producers feed one queue: the sentinel watcher (the file's state) and the node watcher (the
Node as the API server streams it). A single consumer thread compares them and PATCHes only
when they differ, so there are no API calls while nothing changes, and re-assertion after a
restart, a recreated Node, a removed label or an outage needs no special case: each of these
shows up as a Node that does not match.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from detector.backoff import Backoff
from detector.kube import ApiError, WatchExpiredError
from detector.metrics import Status
from detector.report import NodeSnapshot, node_matches, patch_body, wanted_report
from detector.sentinel import SentinelState

LOG = logging.getLogger("pitstop.detector")

_SENTINEL = "sentinel"
_NODE = "node"
_STOP = "stop"


class PatchesNode(Protocol):
    def patch_node(self, body: Mapping[str, Any]) -> dict[str, Any]: ...


class WatchesNode(Protocol):
    def watch_node(
        self, resource_version: str | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]: ...


class Reconciler:
    """Holds the wanted state and the last seen Node; PATCHes when they differ.

    `handle` does one event synchronously (tests drive it directly); `run` is the thread loop.
    """

    def __init__(
        self,
        client: PatchesNode,
        status: Status,
        kured_compatibility: bool,
        backoff: Backoff,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.status = status
        self.kured_compatibility = kured_compatibility
        self.backoff = backoff
        self.now = now
        self.patches_sent = 0
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._sentinel: SentinelState | None = None
        self._first_seen: datetime | None = None
        self._node: NodeSnapshot | None = None
        self._node_seen = False
        self._retry_at: float | None = None

    # Producers (any thread).
    def sentinel_changed(self, state: SentinelState) -> None:
        self._events.put((_SENTINEL, state))

    def node_observed(self, node: NodeSnapshot | None) -> None:
        """A Node as the API has it now; None when it was deleted."""
        self._events.put((_NODE, node))

    def stop(self) -> None:
        self._events.put((_STOP, None))

    # Consumer.
    def run(self) -> None:
        while True:
            timeout = None
            if self._retry_at is not None:
                timeout = max(0.0, self._retry_at - time.monotonic())
            try:
                kind, value = self._events.get(timeout=timeout)
            except queue.Empty:
                kind, value = "retry", None
            if kind == _STOP:
                return
            try:
                self.handle(kind, value)
            except Exception:  # never let one bad event end the detector
                LOG.exception("unexpected error while reconciling")
                self._schedule_retry()

    def handle(self, kind: str, value: Any) -> None:
        if kind == _SENTINEL:
            state: SentinelState = value
            if state.present and (self._sentinel is None or not self._sentinel.present):
                self._first_seen = self.now()
            elif not state.present:
                self._first_seen = None
            self._sentinel = state
            self.status.set_reboot_required(state.present)
        elif kind == _NODE:
            node: NodeSnapshot | None = value
            if node is not None and self._node is not None and node.is_older_than(self._node):
                return  # an event from before our own PATCH: nothing new
            if node is not None and self._node is not None and node.uid != self._node.uid:
                LOG.info("node was recreated (uid %s, was %s)", node.uid, self._node.uid)
            self._node = node
            self._node_seen = True
            self._retry_at = None  # the API answers again: no need to sit out the backoff
        elif kind == "retry":
            self._retry_at = None
        self.reconcile()

    def reconcile(self) -> None:
        if self._sentinel is None or not self._node_seen:
            return  # not both sides known yet
        if self._node is None:
            self.status.diverged()  # the Node is gone; the next ADDED event brings it back
            return
        report = wanted_report(
            self._sentinel.present,
            self._sentinel.reason,
            self._node,
            self._first_seen or self.now(),
        )
        if node_matches(self._node, report, self.kured_compatibility):
            self.status.confirmed()
            self.backoff.reset()
            return
        self.status.diverged()
        if self._retry_at is not None:
            return  # a retry is already scheduled
        body = patch_body(report, self.kured_compatibility)
        self.patches_sent += 1
        try:
            stored = self.client.patch_node(body)
        except ApiError as error:
            self.status.api_error()
            if error.status == 404:
                LOG.warning("node is gone; reporting again when it is back")
                self._node = None
                return
            LOG.warning("report failed (%s); retrying", error)
            self._schedule_retry()
            return
        self._node = NodeSnapshot.from_object(stored)
        if node_matches(self._node, report, self.kured_compatibility):
            LOG.info("reported reboot_required=%s reason=%r", report.required, report.reason)
            self.status.reported()
            self.backoff.reset()
        else:  # something rewrote our PATCH: do not loop on it
            LOG.warning("the stored Node does not carry the report; retrying later")
            self._schedule_retry()

    def _schedule_retry(self) -> None:
        delay = self.backoff.next_delay()
        self._retry_at = time.monotonic() + delay
        LOG.info("next attempt in %.1fs", delay)

    @property
    def retry_pending(self) -> bool:
        return self._retry_at is not None


class NodeWatcher:
    """Streams this Node's changes to `on_node`; re-connects with backoff, forever."""

    def __init__(
        self,
        client: WatchesNode,
        on_node: Callable[[NodeSnapshot | None], None],
        status: Status,
        backoff: Backoff,
    ) -> None:
        self.client = client
        self.on_node = on_node
        self.status = status
        self.backoff = backoff
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self.run, name="node-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        resource_version: str | None = None
        while not self._stopped.is_set():
            started = time.monotonic()
            try:
                for kind, obj in self.client.watch_node(resource_version):
                    resource_version = (obj.get("metadata") or {}).get("resourceVersion")
                    if kind == "BOOKMARK":
                        continue
                    self.backoff.reset()
                    self.on_node(None if kind == "DELETED" else NodeSnapshot.from_object(obj))
                if time.monotonic() - started > 1.0:
                    continue  # the server closed an old watch: resume where it ended
                LOG.debug("watch ended at once; backing off")
            except WatchExpiredError:
                LOG.info("watch expired; starting from the current state")
                resource_version = None
                continue
            except ApiError as error:
                self.status.api_error()
                LOG.warning("watching the node failed (%s)", error)
                resource_version = None  # after an error, start from the current state
            except Exception:
                LOG.exception("unexpected error while watching the node")
                resource_version = None
            self._stopped.wait(self.backoff.next_delay())


def make_backoff(initial: float, maximum: float) -> Backoff:
    return Backoff(initial, maximum, random.Random())
