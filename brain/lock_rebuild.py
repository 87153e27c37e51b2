"""Rebuild a deleted lock from what the cluster still shows.

The lock is the source of truth for "who holds a slot", but the brain also leaves marks in the
cluster: the `pitstop.dev/window` annotation (with the cordon) on every node in maintenance,
and a reboot Job per node and boot, labelled `pitstop.dev/node` and annotated with the boot ID
it was made for. When the ConfigMap is gone, those marks say who was in maintenance and how
far each node got, so every node in flight finishes (or is released) instead of staying
cordoned for good:

- a marked node with a reboot Job made for its current boot: WaitingForNode (its reboot is
  under way, or it did not reboot: the usual checks fail it with a reason);
- a marked node whose boot ID changed since its Job's boot (and not flagged again since the
  Job was made): HealthCheck, then Done (the health gate's PDB list is lost: only the
  postReboot hook, if any, gates it);
- a marked node without such a Job: still flagged, it resumes draining (then reboots) if its
  window's budget allows, else it is released and waits in the queue; not flagged any more, it
  is released (uncordoned and unmarked).

Whether a node was cordoned before Pitstop took it is not recorded on the node, so a rebuilt
lease uncordons it when done; the messages say so. Rebuilt leases never exceed a window's
budget (total or per domain): the extra draining ones are released.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from brain import node_updates
from brain.core.api import GROUP, PLURAL, VERSION
from brain.core.clock import plus
from brain.core.lock_state import LockState, NodeLease, WindowRecord
from brain.core.node_view import NodeView, node_view_from_object
from brain.core.phase import Phase
from brain.core.planner import NamedWindow, assign_windows
from brain.core.window import (
    WindowSpec,
    WindowSpecError,
    parse_window_spec,
    resolve_int_or_percent,
)
from brain.events import EventRecorder, window_reference
from brain.kube import JsonApi, Kube, list_pages
from brain.reboot.reboot_job import label_value
from pitstop import contract

log = logging.getLogger("pitstop.lock")
UNKNOWN_CORDON = "whether it was cordoned before Pitstop took it is not known: it is uncordoned"


@dataclass(frozen=True)
class MarkedNode:
    """A node carrying the brain's `pitstop.dev/window` annotation."""

    view: NodeView
    window: str


@dataclass(frozen=True)
class RebootJobMark:
    """What a reboot Job tells: for which node and boot it was made, when, by which window."""

    name: str
    node_label: str  # the `pitstop.dev/node` label (the node name, or its hash)
    boot_id: str
    window: str
    created: datetime


@dataclass
class Rebuilt:
    """The lock content rebuilt, the nodes to release, and one line per decision."""

    state: LockState = field(default_factory=LockState)
    release: list[str] = field(default_factory=list)
    lines: dict[str, list[str]] = field(default_factory=dict)  # window -> what was decided

    def say(self, window: str, line: str) -> None:
        self.lines.setdefault(window, []).append(line)


def _job_made_this_attempt(node: NodeView, job: RebootJobMark) -> bool:
    """A Job for an earlier boot rebooted the node in this attempt unless the node was flagged
    again after the Job was made (then the Job is from an earlier rollout)."""
    since = node.reboot_required_since
    if not node.reboot_required or since is None:
        return True
    aware = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
    return aware <= job.created


def rebuild_state(
    marked: Sequence[MarkedNode],
    all_nodes: Sequence[NodeView],
    jobs: Sequence[RebootJobMark],
    windows: Mapping[str, Mapping[str, Any]],
    now: datetime,
) -> Rebuilt:
    """Decide (pure) what the lost lock held, from the marks the cluster shows."""
    specs: dict[str, WindowSpec] = {}
    for name, raw in windows.items():
        try:
            specs[name] = parse_window_spec(raw, name)
        except WindowSpecError:
            continue
    governing, _ = assign_windows(
        [NamedWindow(name, spec) for name, spec in sorted(specs.items())], all_nodes
    )
    governed_count = Counter(governing.values())
    result = Rebuilt()
    draining: list[MarkedNode] = []
    for mark in sorted(marked, key=lambda item: item.view.name):
        node = mark.view
        spec = specs.get(mark.window, WindowSpec())
        own_jobs = sorted(
            (job for job in jobs if job.node_label == label_value(node.name)),
            key=lambda job: job.created,
        )
        # (the annotation holds the full boot ID; an older Job may have only the label)
        this_boot = {node.boot_id, label_value(node.boot_id)}
        current = [job for job in own_jobs if job.boot_id in this_boot]
        earlier = [job for job in own_jobs if job.boot_id not in this_boot]
        if current:
            job = current[-1]
            lease = _job_lease(
                mark,
                job,
                Phase.WAITING_FOR_NODE,
                node.boot_id,
                plus(now, spec.reboot.node_return_timeout),
                now,
                f"lock rebuilt: reboot Job {job.name} exists for its current boot; "
                f"waiting for the node to come back ({UNKNOWN_CORDON} when done)",
            )
        elif earlier and _job_made_this_attempt(node, earlier[-1]):
            job = earlier[-1]
            lease = _job_lease(
                mark,
                job,
                Phase.HEALTH_CHECK,
                job.boot_id,
                plus(now, spec.reboot.health_gate.timeout),
                now,
                f"lock rebuilt: rebooted by Job {job.name} (boot ID changed); "
                f"health check (the gate's PDB list was lost; {UNKNOWN_CORDON} when done)",
            )
        elif node.reboot_required:
            draining.append(mark)
            continue
        else:
            result.release.append(node.name)
            result.say(mark.window, f"{node.name} released: not flagged, no reboot Job")
            continue
        lease = lease.model_copy(update={"domain": _domain(node, spec)})
        result.state.nodes[node.name] = lease
        result.say(mark.window, f"{node.name} {lease.phase} (Job {lease.job_name})")
    _resume_drains(draining, specs, governed_count, all_nodes, governing, result, now)
    for name, raw in windows.items():
        if any(lease.window == name for lease in result.state.nodes.values()):
            result.state.windows[name] = WindowRecord(spec=dict(raw))
    return result


def _job_lease(
    mark: MarkedNode,
    job: RebootJobMark,
    phase: Phase,
    boot_id_before: str,
    deadline: datetime,
    now: datetime,
    message: str,
) -> NodeLease:
    """The lease of a marked node whose reboot Job exists: one shape for both phases it can
    be in (waiting for the node, or already back and in its health check)."""
    return NodeLease(
        window=mark.window,
        phase=phase,
        since=now,
        boot_id_before=boot_id_before,
        deadline=deadline,
        job_name=job.name,
        emergency=mark.view.emergency,
        message=message,
    )


def _domain(node: NodeView, spec: WindowSpec) -> str:
    return node.labels.get(spec.topology.key, "") if spec.topology is not None else ""


def _resume_drains(
    draining: Sequence[MarkedNode],
    specs: Mapping[str, WindowSpec],
    governed_count: Mapping[str, int],
    all_nodes: Sequence[NodeView],
    governing: Mapping[str, str],
    result: Rebuilt,
    now: datetime,
) -> None:
    """Marked, flagged nodes without a Job drain again while their window's budget allows."""
    used = Counter(lease.window for lease in result.state.nodes.values())
    used_in_domain = Counter((lease.window, lease.domain) for lease in result.state.nodes.values())
    by_name = {node.name: node for node in all_nodes}
    for mark in draining:
        node = mark.view
        spec = specs.get(mark.window, WindowSpec())
        domain = _domain(node, spec)
        limit = resolve_int_or_percent(spec.max_unavailable, governed_count.get(mark.window, 0))
        domain_limit = limit
        if spec.topology is not None:
            in_domain = sum(
                1
                for name, window in governing.items()
                if window == mark.window and _domain(by_name[name], spec) == domain
            )
            domain_limit = resolve_int_or_percent(spec.topology.max_unavailable, in_domain)
        if used[mark.window] >= limit or used_in_domain[(mark.window, domain)] >= domain_limit:
            result.release.append(node.name)
            result.say(mark.window, f"{node.name} released: its window's budget is used")
            continue
        used[mark.window] += 1
        used_in_domain[(mark.window, domain)] += 1
        result.state.nodes[node.name] = NodeLease(
            window=mark.window,
            phase=Phase.DRAINING,
            since=now,
            boot_id_before=node.boot_id,
            deadline=plus(now, spec.drain.timeout),
            emergency=node.emergency,
            domain=domain,
            message=f"lock rebuilt: no reboot Job yet; draining again ({UNKNOWN_CORDON} when done)",
        )
        result.say(mark.window, f"{node.name} Draining (no reboot Job yet)")


# -- I/O ----------------------------------------------------------------------------------------


def _parse_time(value: str | None) -> datetime:
    if not value:
        return datetime.min.replace(tzinfo=UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class LockRebuilder:
    """Reads the marks from the API (not from the brain's indexes, which may not be filled
    yet at startup), releases the nodes to release, and tells what was rebuilt."""

    def __init__(
        self,
        kube: Kube,
        events: EventRecorder,
        job_namespace: str,
        lock_where: str,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube = kube
        self.now = now  # the API server's time in the brain: moments written to the lock
        self.events = events
        self.job_namespace = job_namespace
        self.lock_where = lock_where
        self._last: Rebuilt | None = None
        self._window_uids: dict[str, str] = {}

    async def rebuild(self) -> LockState:
        views, marked = await asyncio.to_thread(_read_nodes, self.kube.json)
        if not marked:
            self._last = Rebuilt()
            return LockState()
        jobs_listed = await self.kube.get(
            f"/apis/batch/v1/namespaces/{self.job_namespace}/jobs",
            {"labelSelector": f"{contract.MANAGED_BY_LABEL}={contract.MANAGED_BY_VALUE}"},
        )
        jobs = [_job_mark(job) for job in jobs_listed.get("items") or []]
        listed = await self.kube.get(f"/apis/{GROUP}/{VERSION}/{PLURAL}")
        window_objects = listed["items"]
        windows = {
            str(item["metadata"]["name"]): dict(item.get("spec") or {}) for item in window_objects
        }
        self._window_uids = {
            str(item["metadata"]["name"]): str(item["metadata"].get("uid", ""))
            for item in window_objects
        }
        rebuilt = rebuild_state(marked, views, jobs, windows, self.now())
        for name in rebuilt.release:
            # Unmarked and uncordoned before any lock write: a crash here re-does nothing harmful.
            await node_updates.merge_patch_node(
                self.kube, name, node_updates.release_patch(uncordon=True)
            )
        if rebuilt.release and not rebuilt.state.nodes:
            await self._tell(rebuilt)
        self._last = rebuilt
        return rebuilt.state

    async def rebuilt(self, state: LockState) -> None:
        if self._last is not None:
            await self._tell(self._last)

    async def _tell(self, rebuilt: Rebuilt) -> None:
        for window, lines in sorted(rebuilt.lines.items()):
            message = (
                f"lock ConfigMap {self.lock_where} was missing; rebuilt from the nodes' marks "
                f"and reboot Jobs ({UNKNOWN_CORDON} when done): " + "; ".join(lines)
            )
            log.warning("window %s: %s", window, message)
            await self.events.post(
                window_reference(window, self._window_uids.get(window, "")),
                "LockRebuilt",
                message,
                "Warning",
            )


def _job_mark(job: Mapping[str, Any]) -> RebootJobMark:
    metadata = job.get("metadata") or {}
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    return RebootJobMark(
        name=str(metadata.get("name", "")),
        node_label=str(labels.get(contract.JOB_NODE_LABEL, "")),
        boot_id=str(
            annotations.get(contract.JOB_BOOT_ID_LABEL) or labels.get(contract.JOB_BOOT_ID_LABEL)
        ),
        window=str(annotations.get(contract.WINDOW_ANNOTATION, "")),
        created=_parse_time(metadata.get("creationTimestamp")),
    )


def _read_nodes(api: JsonApi) -> tuple[list[NodeView], list[MarkedNode]]:
    """Every Node's view, and the ones marked with a window, read a page at a time (no list of
    whole Nodes is kept)."""
    views: list[NodeView] = []
    marked: list[MarkedNode] = []
    for page in list_pages(api, "/api/v1/nodes"):
        for body in page:
            view = node_view_from_object(body)
            views.append(view)
            window = ((body.get("metadata") or {}).get("annotations") or {}).get(
                contract.WINDOW_ANNOTATION
            )
            if window:
                marked.append(MarkedNode(view, str(window)))
    return views, marked
