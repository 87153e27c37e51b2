"""The brain's one view of the Nodes: {name: NodeView}, kept current by a list and a watch.

Why not kopf: kopf handles every Node event as an object of its own (a body, a patch, a
handler call, an index update), and each one woke every window task, which re-planned the whole
cluster: at 5,000 nodes the start took 5 minutes and kubelet status updates kept a core busy.

The protocol is the brain's one watch client (brain/watch_list.py): a list in pages of 250,
a watch from its resourceVersion with bookmarks, a new list on 410 Gone, a pause on errors.
NodeWatch is its handler, run in the watch's thread: it turns each Node into its small NodeView
there (never the Node itself, never on the event loop), compares it with the one it knows, and
hands the loop only views that changed: a heartbeat or a condition's timestamp leaves the view
equal and costs nothing past the comparison. `synced` is set once the first list is in: no
pass plans from an empty node set.

Pages, not a watch-list (`sendInitialEvents`): the same requests as before (pages and one
watch), served by every API server, each page bounded by its own read timeout. A watch-list's
state would be one response of 5,000 Nodes, read to its closing bookmark before any of it
counts and read again from the start whenever it is cut; its gain (the server builds no whole
list) is small when each page is 250 Nodes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from kubernetes import client

from brain.core.node_view import NodeView, node_view_from_object
from brain.kube import JsonApi
from brain.watch_list import WatchList

log = logging.getLogger("pitstop.node_watch")
PAGE_SIZE = 250
# The API server ends a watch after this long; it is re-opened from the last resourceVersion.
WATCH_SECONDS = 600
# Views the thread changed, handed to the event loop in one call: name -> view (None: deleted).
Changes = dict[str, NodeView | None]


class NodeWatch:
    """{name: NodeView} of every Node, with a wake-up for every change that matters."""

    def __init__(
        self,
        api_client: client.ApiClient,
        on_change: Callable[[], None],
        page_size: int = PAGE_SIZE,
        watch_seconds: int = WATCH_SECONDS,
    ) -> None:
        self._on_change = on_change
        # Read and written on the event loop only (the thread hands its changes over).
        self.views: dict[str, NodeView] = {}
        self.synced = asyncio.Event()
        # The thread's own copy, to compare each event with (same NodeView objects).
        self._known: dict[str, NodeView] = {}
        self._listed = False
        # Events that changed a view.
        self.changes = 0
        # The protocol (its counts: `lists`, `watches`, `events`), with this as its handler.
        self.watch: WatchList[NodeView] = WatchList(
            JsonApi(api_client),
            "/api/v1/nodes",
            self,
            what="nodes",
            thread_name="pitstop-node-watch",
            watch_lists=False,
            page_size=page_size,
            watch_seconds=watch_seconds,
        )

    def nodes(self) -> list[NodeView]:
        return list(self.views.values())

    @property
    def resource_version(self) -> str:
        """Where the watch resumes from (the last event's or bookmark's)."""
        return self.watch.resource_version

    @property
    def lists(self) -> int:
        """Complete lists so far (the watch also counts its requests and events)."""
        return self.watch.lists

    def resume_from(self, resource_version: str) -> None:
        """End the current watch and resume from `resource_version`, as a reconnect would."""
        self.watch.resume_from(resource_version)

    def start(self) -> None:
        """Start the thread (from the event loop, which is told of the changes)."""
        self.watch.start()

    async def stop(self) -> None:
        """Stop the thread: its response is shut, so the blocked read returns at once."""
        await self.watch.stop()

    # -- the watch's thread (WatchHandler) ------------------------------------------------------

    def parse(self, item: dict[str, Any]) -> NodeView:
        return node_view_from_object(item)

    def on_state(self, objects: list[NodeView]) -> None:
        """Every Node: the views that differ from the known ones go to the loop (all of them
        on the first list, which sets `synced`)."""
        fresh = {view.name: view for view in objects}
        first = not self._listed
        if first:
            changes: Changes = dict(fresh)
        else:
            changes = {name: view for name, view in fresh.items() if self._known.get(name) != view}
            changes.update({name: None for name in self._known if name not in fresh})
        self._known, self._listed = fresh, True
        log.info("node watch: %d nodes listed, %d changed", len(fresh), len(changes))
        self.watch.on_loop(self._apply, changes, first)

    def on_change(self, kind: str, item: NodeView) -> None:
        if kind == "DELETED":
            view: NodeView | None = None
            changed = self._known.pop(item.name, None) is not None
        else:
            view = item
            changed = self._known.get(item.name) != item
            if changed:
                self._known[item.name] = item
        if changed:
            self.changes += 1
            self.watch.on_loop(self._apply, {item.name: view}, False)

    def on_failure(self, error: Exception, has_state: bool) -> None:
        """Nothing to do: the watch logs and tries again, the views stay as they were."""

    # -- the event loop -----------------------------------------------------------------------

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
