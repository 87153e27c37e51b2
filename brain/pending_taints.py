"""The pending taint on waiting nodes: decided by the pass, written in its background.

A pass decides which nodes need the window's pending taint added or a stale one removed (from
the NodeViews, so a node whose taints are already right costs nothing), admits first, and hands
the writes to a `PendingTaintWriter`, which sends them at most CONCURRENT_WRITES at a time while
the pass goes on. Before (issue 18), 5,000 flagged nodes were tainted one PATCH at a time inside
the pass: the first pass took 213 s and admitted nothing meanwhile. The taint is a courtesy to
the scheduler (PreferNoSchedule by default), so admission never waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kubernetes.client.exceptions import ApiException

from brain import node_updates
from brain.core.lock_state import LockState
from brain.core.node_view import NodeView, Taint
from brain.core.planner import Plan, WindowPlan
from brain.core.window import WindowSpec
from brain.kube import Kube

log = logging.getLogger("pitstop.pending_taints")
CONCURRENT_WRITES = 16
# A node we wrote whose view still shows the taints it had before: the watch has not brought
# our change yet, so it is not written again; after this long it is (the change may be lost).
VIEW_LAG_SECONDS = 30.0


@dataclass(frozen=True)
class TaintChange:
    """What one node's taints need: `add` (absent by key) and `remove` (present keys)."""

    node: NodeView
    add: Taint | None = None
    remove: tuple[str, ...] = ()


def taint_changes(
    plan: Plan,
    window_plan: WindowPlan,
    nodes: Iterable[NodeView],
    lock: LockState,
    spec: WindowSpec,
) -> list[TaintChange]:
    """The taint changes window `window_plan` asks for, only where a node's view differs.

    A node waiting in this window gets its taint (none if switched off); a node in the lock
    (in maintenance, or admitted by this pass: its cordon patch drops the taint) or starting now
    gets none added. A node that waits nowhere any more and is this window's or no window's
    loses every pending taint key; a node waiting here keeps only the key its window asks for.
    """
    pending_anywhere = {item.name for wp in plan.windows for item in wp.pending}
    starting = {start.node for start in window_plan.starts}
    waiting_here = {item.name for item in window_plan.pending}
    governed = set(window_plan.governed)
    taint = node_updates.pending_taint(spec)  # None: switched off (reboot.pendingTaint)
    keys = node_updates.pending_taint_keys(spec)
    changes: list[TaintChange] = []
    for node in nodes:
        add: Taint | None = None
        remove: tuple[str, ...] = ()
        in_lock = node.name in lock.nodes
        if (
            node.name in waiting_here
            and taint is not None
            and not in_lock
            and node.name not in starting
            and not node.has_taint(taint.key)
        ):
            add = taint
        if not (node.name in pending_anywhere or in_lock):
            if plan.governing.get(node.name) in (window_plan.name, None):
                remove = tuple(key for key in keys if node.has_taint(key))
        elif node.name in pending_anywhere and node.name in governed:
            wanted = taint.key if taint is not None else None
            remove = tuple(key for key in keys if key != wanted and node.has_taint(key))
        if add is not None or remove:
            changes.append(TaintChange(node, add, remove))
    return changes


@dataclass
class PendingTaintWriter:
    """Writes taint changes in the background, CONCURRENT_WRITES at once, one at a time per
    node; a node whose change is in flight, or whose view has not yet caught up with our last
    write, is not written again."""

    kube: Kube
    # Whether a node holds a slot now (the lock as last read or written): a queued write for a
    # node admitted meanwhile is dropped (its cordon patch took the taint off already).
    in_maintenance: Callable[[str], bool] = lambda name: False
    concurrency: int = CONCURRENT_WRITES
    clock: Callable[[], float] = time.monotonic
    _slots: asyncio.Semaphore | None = None
    _in_flight: set[str] = field(default_factory=set)
    # node -> (its taints as the view showed them when we wrote, when)
    _written: dict[str, tuple[tuple[Taint, ...], float]] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _warned_at: float | None = None
    _unreported: int = 0  # failures since the last warning

    def submit(self, changes: Iterable[TaintChange]) -> int:
        """Start writing `changes` in the background; returns how many were started."""
        now = self.clock()
        self._written = {
            name: seen for name, seen in self._written.items() if now - seen[1] < VIEW_LAG_SECONDS
        }
        started = 0
        for change in changes:
            name = change.node.name
            if name in self._in_flight:
                continue
            seen = self._written.get(name)
            if seen is not None and seen[0] == change.node.taints:
                continue  # our write is not in the view yet
            self._in_flight.add(name)
            task = asyncio.create_task(self._write(change))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started += 1
        return started

    async def wait(self) -> None:
        """Until every write started so far has ended (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.wait()

    async def _write(self, change: TaintChange) -> None:
        name = change.node.name
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        try:
            async with self._slots:
                add = change.add
                if add is not None and self.in_maintenance(name):
                    add = None
                    if not change.remove:
                        return
                await node_updates.change_taints(self.kube, change.node, add, change.remove)
                # Written, or found right on a re-read: either way this view is out of date.
                self._written[name] = (change.node.taints, self.clock())
        except ApiException as error:
            if error.status != 404:  # a node deleted meanwhile needs no taint
                self._failed(name, f"{error.status} {error.reason}")
        except Exception as error:
            self._failed(name, repr(error))
        finally:
            self._in_flight.discard(name)

    def _failed(self, name: str, why: str) -> None:
        """One warning every VIEW_LAG_SECONDS at most (a troubled API server would otherwise
        get a line per node); the next pass decides again."""
        self._unreported += 1
        now = self.clock()
        if self._warned_at is not None and now - self._warned_at < VIEW_LAG_SECONDS:
            return
        others = f" (and {self._unreported - 1} other failures since the last report)"
        log.warning(
            "node %s: its pending taint could not be changed, tried again next pass: %s%s",
            name,
            why,
            others if self._unreported > 1 else "",
        )
        self._warned_at, self._unreported = now, 0
