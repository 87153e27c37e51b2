"""Cordon and drain a node through the Eviction API, with `kubectl drain`'s semantics.

Why not shell out to kubectl: the brain must stay cheap for the API server and cancellable. A
drain here costs one list of the node's pods, one list of PodDisruptionBudgets (to name the
budgets the health gate must wait for; a refused drain's budget watch stands in for it), one
watch of the node's pods, and the evictions; with
`watch_list` (the brain's choice) the watch also delivers the node's pods first, where the server
serves watch-lists, and the list is not needed. A pod
blocked by a budget (429) is retried as soon as that budget allows a disruption again (a watch
of the budgets, opened at the drain's first refusal: see budget_watch), once per change of the
budget, and every `eviction_retry_seconds` (kubectl's 5 s) at the latest, never in a tight
loop; a pod counts as gone when the watch reports it deleted or replaced (new UID).

Every blocking `kubernetes` call runs in a thread, so the brain's event loop never blocks. The
drain is idempotent: cancelling it (the brain stops) and calling it again later re-lists the
node and carries on where the cluster is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, NamedTuple

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from brain.core.selectors import EVERYTHING, Selector, selector_from_object
from brain.drain.budget_watch import BudgetSignals, BudgetWatch
from brain.drain.watch_stream import (
    INITIAL_EVENTS_END_ANNOTATION,
    close_response,
    response_lines,
    stop_watch_thread,
)

log = logging.getLogger(__name__)

MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
FINISHED_PHASES = frozenset({"Succeeded", "Failed"})
# The API server's StatusCause type on a 429 that names the blocking budget.
DISRUPTION_BUDGET_CAUSE = "DisruptionBudget"
_BUDGET_NAME_PATTERN = re.compile(r"disruption budget (\S+)")
# Backoff for eviction errors other than 429 (500s, 403s, network trouble).
ERROR_BACKOFF_FIRST_SECONDS = 1.0
ERROR_BACKOFF_MAX_SECONDS = 30.0
# A watch ends server-side after this long and is resumed from its last resourceVersion.
WATCH_SECONDS = 300
# The bookmark that ends a watch-list's initial state (sendInitialEvents).


@dataclass(frozen=True)
class DrainOptions:
    """How to drain: the window's drain spec, mapped by the caller."""

    grace_period_seconds: int | None = None
    pod_selector: Selector = EVERYTHING
    delete_emptydir_data: bool = False
    force: bool = False
    # A refused eviction is retried when its PDB allows again, and after this long at the latest.
    eviction_retry_seconds: float = 5.0
    # (namespace, name) of pods never evicted: the brain's own pod (settings.pod_name).
    keep_pods: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True, order=True)
class PodRef:
    """One pod, by identity: a pod recreated under the same name is a different PodRef."""

    namespace: str
    name: str
    uid: str = ""

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @classmethod
    def from_pod(cls, pod: Mapping[str, Any]) -> PodRef:
        metadata = pod.get("metadata") or {}
        return cls(
            str(metadata.get("namespace", "")),
            str(metadata.get("name", "")),
            str(metadata.get("uid", "")),
        )


@dataclass(frozen=True)
class SkippedPod:
    pod: PodRef
    reason: str


@dataclass(frozen=True)
class DrainProblem:
    """A pod the drain refuses to remove with these options (kubectl drain would refuse too)."""

    pod: PodRef
    reason: str

    def __str__(self) -> str:
        return f"{self.pod}: {self.reason}"


class Classification(NamedTuple):
    to_evict: list[PodRef]
    skipped: list[SkippedPod]
    problems: list[DrainProblem]


def _controller_of(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for owner in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("controller"):
            return owner  # type: ignore[no-any-return]
    return None


def classify_pods(pods: Iterable[Mapping[str, Any]], options: DrainOptions) -> Classification:
    """Decide, like `kubectl drain`, what happens to each pod of a node (pure).

    Order of the checks: the brain's own pod, podSelector, mirror pod, DaemonSet pod (all
    skipped); finished pods are evicted whatever else holds; then a pod without a controller
    needs `force` and a pod with emptyDir volumes needs `delete_emptydir_data` (a pod failing
    both gets both reasons).
    """
    to_evict: list[PodRef] = []
    skipped: list[SkippedPod] = []
    problems: list[DrainProblem] = []
    for pod in pods:
        ref = PodRef.from_pod(pod)
        metadata = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        phase = (pod.get("status") or {}).get("phase")
        if ref.key in options.keep_pods:
            skipped.append(SkippedPod(ref, "the brain's own pod (it restarts with the node)"))
            continue
        if not options.pod_selector.matches(metadata.get("labels")):
            skipped.append(SkippedPod(ref, "does not match the podSelector"))
            continue
        if MIRROR_POD_ANNOTATION in (metadata.get("annotations") or {}):
            skipped.append(SkippedPod(ref, "mirror (static) pod"))
            continue
        controller = _controller_of(pod)
        if controller is not None and controller.get("kind") == "DaemonSet":
            skipped.append(SkippedPod(ref, "DaemonSet-managed pod"))
            continue
        if phase in FINISHED_PHASES:
            to_evict.append(ref)
            continue
        reasons: list[str] = []
        if controller is None and not options.force:
            reasons.append("has no controller (set force to delete it)")
        volumes = spec.get("volumes") or []
        if not options.delete_emptydir_data and any("emptyDir" in volume for volume in volumes):
            reasons.append("uses emptyDir volumes (set deleteEmptyDirData to delete it)")
        if reasons:
            problems.append(DrainProblem(ref, "; ".join(reasons)))
        else:
            to_evict.append(ref)
    return Classification(to_evict, skipped, problems)


# -- request counting ---------------------------------------------------------------------------


@dataclass
class RequestCounter:
    """Counts API requests by kind, so a test (or a metric) can check a drain stays cheap."""

    counts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())


def _count(counter: RequestCounter | None, kind: str) -> None:
    if counter is not None:
        counter.add(kind)


# -- cordon -------------------------------------------------------------------------------------


async def _set_unschedulable(
    api: client.ApiClient, node: str, unschedulable: bool, counter: RequestCounter | None
) -> None:
    _count(counter, "patch-node")
    core = client.CoreV1Api(api)
    await asyncio.to_thread(
        core.patch_node, node, {"spec": {"unschedulable": unschedulable}}, _preload_content=False
    )


async def cordon(api: client.ApiClient, node: str, counter: RequestCounter | None = None) -> None:
    """Mark the node unschedulable (one PATCH; cordoning a cordoned node changes nothing)."""
    await _set_unschedulable(api, node, True, counter)


async def uncordon(api: client.ApiClient, node: str, counter: RequestCounter | None = None) -> None:
    """Make the node schedulable again (one PATCH; idempotent)."""
    await _set_unschedulable(api, node, False, counter)


# -- the drain ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DrainResult:
    """What a drain achieved by its deadline.

    `pdbs` are the budgets (namespace/name) that cover pods this drain evicted: the health gate
    waits for them to be healthy again. `blocking_pdbs` are those that refused an eviction of a
    pod still there at the deadline. `problems` are pods refused (see classify_pods): found up
    front (then nothing is evicted) or arriving during the drain (which then stops); retrying
    will not help until they change. Pods that arrive during the drain and may be evicted are
    evicted like the others.
    """

    completed: bool
    message: str
    remaining: tuple[PodRef, ...] = ()
    pdbs: tuple[str, ...] = ()
    blocking_pdbs: tuple[str, ...] = ()
    problems: tuple[DrainProblem, ...] = ()
    evicted: int = 0
    skipped: int = 0
    eviction_attempts: int = 0


class _Outcome(Enum):
    EVICTED = "evicted"
    GONE = "gone"
    BLOCKED = "blocked"
    ERROR = "error"


@dataclass(frozen=True)
class _EvictionAnswer:
    outcome: _Outcome
    pdb: str | None = None
    error: str = ""


def _status_of(error: ApiException) -> Mapping[str, Any]:
    try:
        body = json.loads(error.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _blocking_budget(namespace: str, status: Mapping[str, Any]) -> str | None:
    """The budget named in a 429's causes ("The disruption budget web needs 2 healthy pods")."""
    for cause in (status.get("details") or {}).get("causes") or []:
        is_budget = DISRUPTION_BUDGET_CAUSE in (cause.get("reason"), cause.get("type"))
        match = _BUDGET_NAME_PATTERN.search(str(cause.get("message", "")))
        if is_budget and match:
            return f"{namespace}/{match.group(1)}"
    return None


def _evict_once(
    core: Any, pod: PodRef, grace_period_seconds: int | None, counter: RequestCounter | None
) -> _EvictionAnswer:
    """One Eviction, guarded by the pod's UID so a replacement with the same name is untouched."""
    delete_options: dict[str, Any] = {"preconditions": {"uid": pod.uid}} if pod.uid else {}
    if grace_period_seconds is not None:
        delete_options["gracePeriodSeconds"] = grace_period_seconds
    body = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod.name, "namespace": pod.namespace},
        "deleteOptions": delete_options,
    }
    _count(counter, "evict")
    try:
        core.create_namespaced_pod_eviction(pod.name, pod.namespace, body, _preload_content=False)
    except ApiException as error:
        status = _status_of(error)
        message = str(status.get("message") or error.reason or error)
        if error.status == 404:
            return _EvictionAnswer(_Outcome.GONE)
        if error.status == 409 and "UID" in message:
            return _EvictionAnswer(_Outcome.GONE)
        if error.status == 429:
            return _EvictionAnswer(_Outcome.BLOCKED, pdb=_blocking_budget(pod.namespace, status))
        return _EvictionAnswer(_Outcome.ERROR, error=f"HTTP {error.status}: {message}")
    except Exception as error:  # network trouble: retried with backoff, reported
        return _EvictionAnswer(_Outcome.ERROR, error=f"{type(error).__name__}: {error}")
    return _EvictionAnswer(_Outcome.EVICTED)


def _list_node_pods(
    core: Any, node: str, counter: RequestCounter | None
) -> tuple[list[dict[str, Any]], str]:
    _count(counter, "list-pods")
    response = core.list_pod_for_all_namespaces(
        field_selector=f"spec.nodeName={node}", _preload_content=False
    )
    document = json.loads(response.data)
    return list(document.get("items") or []), str(document["metadata"].get("resourceVersion", ""))


def _covering_budgets(
    budgets: Sequence[Mapping[str, Any]], pods: Mapping[PodRef, Mapping[str, str] | None]
) -> dict[PodRef, list[str]]:
    """For each pod, the budgets (namespace/name) whose selector matches it."""
    covering: dict[PodRef, list[str]] = {pod: [] for pod in pods}
    for budget in budgets:
        metadata = budget.get("metadata") or {}
        namespace = metadata.get("namespace", "")
        try:
            selector = selector_from_object((budget.get("spec") or {}).get("selector"))
        except ValueError:
            continue
        for pod, labels in pods.items():
            if pod.namespace == namespace and selector.matches(labels):
                covering[pod].append(f"{namespace}/{metadata.get('name', '')}")
    return covering


# The client's own line splitter for streamed watch responses (it is untyped).


class _GoneTracker:
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


class _NodePodWatch:
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
        tracker: _GoneTracker | None,
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

    def attach(self, tracker: _GoneTracker) -> None:
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
        items, self._resource_version = _list_node_pods(self._core, self._node, self._counter)
        present = {PodRef.from_pod(pod).key: PodRef.from_pod(pod).uid for pod in items}
        self._deliver(self._handle, "snapshot", present)

    def _start_from_a_list(self) -> None:
        items, self._resource_version = _list_node_pods(self._core, self._node, self._counter)
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
        _count(self._counter, "watch-pods")
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
        _count(self._counter, "watch-pods")
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


@dataclass
class _PodProgress:
    pod: PodRef
    attempts: int = 0
    evicted: bool = False
    blocking_pdb: str | None = None
    blocked: bool = False
    last_error: str = ""


@dataclass
class _Refusals:
    first: float
    last: float
    pod: PodRef
    untold: bool = True  # refused since the last line


class RefusalLog:
    """Says in the log which budgets refuse a drain's evictions, and for how long.

    A refused eviction is retried every few seconds for as long as the drain lasts: a line per
    refusal would flood the log, none (as before) leaves a stalled drain silent. So: one line
    at the drain's first refusal, then at most one every `every_seconds`, naming each budget
    that refused since the last line. `refused` returns the line to log now, or None.
    """

    def __init__(
        self,
        node: str,
        every_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.every_seconds = every_seconds
        self._clock = clock
        self._budgets: dict[str, _Refusals] = {}
        self._logged_at: float | None = None

    def refused(self, pod: PodRef, pdb: str | None) -> str | None:
        now = self._clock()
        budget = f"PDB {pdb}" if pdb else "an unnamed budget (429)"
        known = self._budgets.get(budget)
        if known is None or now - known.last > self.every_seconds:  # refusing anew
            self._budgets[budget] = _Refusals(now, now, pod)
        else:
            known.last, known.pod, known.untold = now, pod, True
        if self._logged_at is not None and now - self._logged_at < self.every_seconds:
            return None
        self._logged_at = now
        parts = []
        for name, refusals in sorted(self._budgets.items()):
            if refusals.untold:
                parts.append(
                    f"{name} refuses evicting pod {refusals.pod} (for {now - refusals.first:.0f} s)"
                )
                refusals.untold = False
        return f"drain of node {self.node} blocked: " + "; ".join(parts)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _timeout_message(stuck: Sequence[_PodProgress]) -> str:
    """Say why each pod still there at the deadline is there, grouped by cause."""
    by_budget: dict[str, list[PodRef]] = {}
    parts: list[str] = []
    unnamed_blocked: list[PodRef] = []
    not_gone: list[PodRef] = []
    failing: list[_PodProgress] = []
    not_tried: list[PodRef] = []
    for progress in stuck:
        if progress.blocked and progress.blocking_pdb:
            by_budget.setdefault(progress.blocking_pdb, []).append(progress.pod)
        elif progress.blocked:
            unnamed_blocked.append(progress.pod)
        elif progress.evicted:
            not_gone.append(progress.pod)
        elif progress.last_error:
            failing.append(progress)
        else:
            not_tried.append(progress.pod)
    for budget, pods in sorted(by_budget.items()):
        parts.append(f"{_plural(len(pods), 'pod')} still protected by PDB {budget}")
    if unnamed_blocked:
        names = ", ".join(map(str, unnamed_blocked))
        parts.append(
            f"{_plural(len(unnamed_blocked), 'pod')} still refused eviction (429): {names}"
        )
    if not_gone:
        names = ", ".join(map(str, not_gone))
        parts.append(f"{_plural(len(not_gone), 'pod')} evicted but not gone yet: {names}")
    for progress in failing:
        parts.append(f"pod {progress.pod} could not be evicted: {progress.last_error}")
    if not_tried:
        names = ", ".join(map(str, not_tried))
        parts.append(f"{_plural(len(not_tried), 'pod')} not evicted yet: {names}")
    return "; ".join(parts) + " at the drain timeout"


def _seconds_until(deadline: datetime) -> float:
    if deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=UTC)
    return max(0.0, (deadline - datetime.now(UTC)).total_seconds())


async def _evict_until_gone(
    core: Any,
    progress: _PodProgress,
    tracker: _GoneTracker,
    options: DrainOptions,
    counter: RequestCounter | None,
    refusals: RefusalLog,
    budgets: BudgetSignals,
) -> None:
    """Evict one pod and wait until it is gone, retrying a refusal once its budget allows a
    disruption again, and at the steady pace at the latest."""
    backoff = ERROR_BACKOFF_FIRST_SECONDS
    pod = progress.pod
    while not tracker.is_gone(pod):
        mark = budgets.mark()  # before the request: a change while it is answered counts
        progress.attempts += 1  # counted when made: the answer may come after the drain ended
        answer = await asyncio.to_thread(
            _evict_once, core, pod, options.grace_period_seconds, counter
        )
        if answer.outcome is _Outcome.GONE:
            tracker.mark_gone(pod.key)
            return
        if answer.outcome is _Outcome.EVICTED:
            progress.evicted, progress.blocked, progress.last_error = True, False, ""
            await tracker.wait_gone(pod)
            return
        if answer.outcome is _Outcome.BLOCKED:
            progress.blocked, progress.blocking_pdb = True, answer.pdb or progress.blocking_pdb
            line = refusals.refused(pod, answer.pdb)
            if line is not None:
                log.info("%s", line)
            await _wait_to_retry(pod, answer.pdb, mark, tracker, budgets, options)
            continue
        progress.blocked, progress.last_error = False, answer.error
        log.warning("evicting pod %s failed (retrying in %.0f s): %s", pod, backoff, answer.error)
        await tracker.wait_gone(pod, backoff)
        backoff = min(backoff * 2, ERROR_BACKOFF_MAX_SECONDS)


async def _wait_to_retry(
    pod: PodRef,
    budget: str | None,
    mark: int,
    tracker: _GoneTracker,
    budgets: BudgetSignals,
    options: DrainOptions,
) -> None:
    """After a refusal: until the pod is gone, its budget allows a disruption again (a change
    after `mark`), or the retry pace is up, whichever comes first."""
    pace = options.eviction_retry_seconds
    if budget is None:  # an unnamed 429 (the API server's own rate limit, say): the pace
        await tracker.wait_gone(pod, pace)
        return
    await _first_of((tracker.wait_gone(pod), budgets.allowed_since(budget, mark, pace)), pace)


async def drain_node(
    api: client.ApiClient,
    node: str,
    options: DrainOptions,
    deadline: datetime,
    counter: RequestCounter | None = None,
    watch_list: bool = False,
) -> DrainResult:
    """Evict the node's pods (as `kubectl drain` would) until they are gone or the deadline.

    Does not cordon: the caller cordons first (and records whether the node already was). A
    pod that arrives during the drain is evicted too (the scheduler's cache can lag the cordon),
    so on a node left schedulable the drain would chase its workloads' replacements.
    Cancelling stops the evictions and the watch cleanly; calling again resumes.
    `watch_list`: read the node's pods through the watch itself (one request, not two) where
    the server serves watch-lists.
    """
    core = client.CoreV1Api(api)
    watch: _NodePodWatch | None = None
    resource_version = ""
    if watch_list:
        watch = _NodePodWatch(core, node, None, None, counter)
        watch.start()
        try:
            items = await watch.initial
        except BaseException:
            await watch.stop()
            raise
    else:
        items, resource_version = await asyncio.to_thread(_list_node_pods, core, node, counter)
    try:
        return await _drain_listed(
            api, core, node, options, deadline, counter, items, resource_version, watch
        )
    finally:
        if watch is not None:
            await watch.stop()


async def _drain_listed(
    api: client.ApiClient,
    core: Any,
    node: str,
    options: DrainOptions,
    deadline: datetime,
    counter: RequestCounter | None,
    items: list[dict[str, Any]],
    resource_version: str,
    watch: _NodePodWatch | None,
) -> DrainResult:
    """drain_node once the node's pods are known (and, with a watch-list, watched already)."""
    to_evict, skipped, problems = classify_pods(items, options)
    if problems:
        listed = "; ".join(map(str, problems))
        return DrainResult(
            completed=False,
            message=f"cannot drain node {node}: {listed}",
            remaining=tuple(problem.pod for problem in problems),
            problems=tuple(problems),
            skipped=len(skipped),
        )
    if not to_evict:
        return DrainResult(
            completed=True, message=f"node {node} has no pods to evict", skipped=len(skipped)
        )

    labels_of = {PodRef.from_pod(pod): (pod.get("metadata") or {}).get("labels") for pod in items}

    tracker = _GoneTracker(to_evict)
    progress: dict[PodRef, _PodProgress] = {}
    workers: list[asyncio.Task[None]] = []
    # By pod: a refused pod's later events (kwok starting it, say) may come before the drain
    # has stopped, and must not report it twice.
    arrived_problems: dict[tuple[str, str], DrainProblem] = {}
    problem_arrived = asyncio.Event()
    ending = False
    refusals = RefusalLog(node)
    budget_watch: BudgetSignals = BudgetWatch(client.PolicyV1Api(api), counter)

    def evict(pod: PodRef) -> None:
        progress[pod] = _PodProgress(pod)
        workers.append(
            asyncio.create_task(
                _evict_until_gone(
                    core, progress[pod], tracker, options, counter, refusals, budget_watch
                )
            )
        )

    def on_arrival(pod: Mapping[str, Any]) -> None:
        # The scheduler can still bind a pod here for a moment after the cordon (its cache has
        # not seen it yet). Such a pod is drained like the others, not left to the reboot.
        if ending or (pod.get("metadata") or {}).get("deletionTimestamp"):
            return
        arrived = classify_pods([pod], options)
        for ref in arrived.to_evict:
            log.info("pod %s arrived on node %s during its drain: evicting it too", ref, node)
            labels_of[ref] = (pod.get("metadata") or {}).get("labels")
            tracker.track(ref)
            evict(ref)
        for problem in arrived.problems:
            arrived_problems.setdefault(problem.pod.key, problem)
            problem_arrived.set()

    tracker.on_arrival = on_arrival
    if watch is None:
        watch = _NodePodWatch(core, node, resource_version, tracker, counter)
        watch.start()
    else:
        watch.attach(tracker)
    for pod in to_evict:
        evict(pod)
    try:
        await _first_of((tracker.all_gone.wait(), problem_arrived.wait()), _seconds_until(deadline))
    finally:
        ending = True
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await watch.stop()
        await budget_watch.stop()

    # The budgets covering the evicted pods: what the budget watch (a refused drain) has seen,
    # else a list.
    budgets = budget_watch.budgets()
    if budgets is None:
        budgets = await asyncio.to_thread(_list_budgets, api, counter)
    remaining_keys = set(tracker.remaining())
    stuck = [item for pod, item in progress.items() if pod.key in remaining_keys]
    removed = [pod for pod in progress if pod.key not in remaining_keys]
    covering = _covering_budgets(budgets, {pod: labels_of.get(pod) for pod in removed})
    pdbs = sorted({budget for pod in removed for budget in covering.get(pod, [])})
    blocking = sorted({item.blocking_pdb for item in stuck if item.blocking_pdb and item.blocked})
    attempts = sum(item.attempts for item in progress.values())
    refused = list(arrived_problems.values())
    if refused:
        listed = "; ".join(map(str, refused))
        message = f"cannot drain node {node}: arrived during the drain: {listed}"
    elif not stuck:
        message = f"drained node {node}: {_plural(len(removed), 'pod')} evicted"
    else:
        message = _timeout_message(stuck)
    return DrainResult(
        completed=not stuck and not refused,
        message=message,
        remaining=tuple(item.pod for item in stuck) + tuple(problem.pod for problem in refused),
        problems=tuple(refused),
        pdbs=tuple(pdbs),
        blocking_pdbs=tuple(blocking),
        evicted=len(removed),
        skipped=len(skipped),
        eviction_attempts=attempts,
    )


async def _first_of(waits: Iterable[Coroutine[Any, Any, Any]], at_most_seconds: float) -> None:
    """Wait until the first of `waits` finishes or `at_most_seconds` pass; cancel the others."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, timeout=at_most_seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _list_budgets(api: client.ApiClient, counter: RequestCounter | None) -> list[dict[str, Any]]:
    _count(counter, "list-pdbs")
    policy: Any = client.PolicyV1Api(api)
    try:
        response = policy.list_pod_disruption_budget_for_all_namespaces(_preload_content=False)
    except ApiException as error:
        # Without the list the drain still works; only the health gate loses its PDB names.
        log.warning("listing PodDisruptionBudgets failed: %s", error.reason)
        return []
    return list(json.loads(response.data).get("items") or [])


# -- after the drain ----------------------------------------------------------------------------


async def force_delete(
    api: client.ApiClient,
    pods: Iterable[PodRef],
    grace_period_seconds: int | None = None,
    counter: RequestCounter | None = None,
) -> int:
    """onTimeout=Force: delete pods directly, ignoring their budgets; returns how many deleted.

    Pods already gone (404) or replaced (UID precondition fails, 409) are left alone.
    """
    core: Any = client.CoreV1Api(api)
    deleted = 0
    for pod in pods:
        body: dict[str, Any] = {"preconditions": {"uid": pod.uid}} if pod.uid else {}
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        _count(counter, "delete-pod")
        try:
            await asyncio.to_thread(
                core.delete_namespaced_pod,
                pod.name,
                pod.namespace,
                body=body,
                _preload_content=False,
            )
        except ApiException as error:
            if error.status in (404, 409):
                continue
            raise
        deleted += 1
    return deleted


async def pdbs_healthy(
    api: client.ApiClient, pdbs: Iterable[str], counter: RequestCounter | None = None
) -> tuple[bool, str]:
    """Are these budgets (namespace/name) whole again? For the health gate after a reboot.

    Healthy means the disruption controller has seen the budget's current generation and counts
    every expected pod healthy. A budget that no longer exists has nothing to wait for.
    """
    policy: Any = client.PolicyV1Api(api)
    waiting: list[str] = []
    for full_name in pdbs:
        namespace, _, name = full_name.partition("/")
        _count(counter, "get-pdb")
        try:
            response = await asyncio.to_thread(
                policy.read_namespaced_pod_disruption_budget,
                name,
                namespace,
                _preload_content=False,
            )
        except ApiException as error:
            if error.status == 404:
                continue
            raise
        budget = json.loads(response.data)
        status = budget.get("status") or {}
        generation = (budget.get("metadata") or {}).get("generation", 0)
        if status.get("observedGeneration", 0) < generation:
            waiting.append(f"PDB {full_name} not yet observed by the disruption controller")
            continue
        healthy, expected = status.get("currentHealthy", 0), status.get("expectedPods", 0)
        if healthy < expected:
            waiting.append(f"PDB {full_name}: {healthy} of {expected} pods healthy")
    if waiting:
        return False, "; ".join(waiting)
    return True, "all PodDisruptionBudgets healthy"
