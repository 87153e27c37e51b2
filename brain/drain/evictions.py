"""Drain a node through the Eviction API, with `kubectl drain`'s semantics (the caller cordons).

Why not shell out to kubectl: the brain must stay cheap for the API server and cancellable. A
drain here costs one list of the node's pods, one list of PodDisruptionBudgets (to name the
budgets the health gate must wait for; a budget watch stands in for it: the brain's shared one,
or a refused drain's own), one watch of the node's pods (pod_watch), and the evictions; with
`watch_list` (the brain's choice) the watch also delivers the node's pods first, where the
server serves watch-lists, and the list is not needed. Which pods are evicted is classify's
decision. A pod blocked by a budget (429) is retried as soon as that budget allows a disruption
again (a watch of the budgets: the brain's shared one, or the drain's own opened at its first
refusal; see budget_watch), once per change of the budget, and every `eviction_retry_seconds`
(kubectl's 5 s) at the latest, never in a tight loop; a pod counts as
gone when the watch reports it deleted or replaced (new UID).

Every blocking `kubernetes` call runs in a thread, so the brain's event loop never blocks. The
drain is idempotent: cancelling it (the brain stops) and calling it again later re-lists the
node and carries on where the cluster is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from brain.drain.budget_watch import SHARED_SETTLE_SECONDS, BudgetSignals, BudgetWatch
from brain.drain.budgets import covering_budgets, list_budgets
from brain.drain.classify import (
    DrainOptions,
    DrainProblem,
    PodRef,
    classify_pods,
    is_daemon_set_pod,
)
from brain.drain.pod_watch import GoneTracker, NodePodWatch
from brain.drain.refusals import PodProgress, RefusalLog, plural, timeout_message
from brain.kube import JsonApi

log = logging.getLogger(__name__)

# The API server's StatusCause type on a 429 that names the blocking budget.
DISRUPTION_BUDGET_CAUSE = "DisruptionBudget"
_BUDGET_NAME_PATTERN = re.compile(r"disruption budget (\S+)")
# Backoff for eviction errors other than 429 (500s, 403s, network trouble).
ERROR_BACKOFF_FIRST_SECONDS = 1.0
ERROR_BACKOFF_MAX_SECONDS = 30.0


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
    # DaemonSet pods seen on the node (before its reboot): with none, the health gate has no
    # node-local agent to wait for, and does not list the node's pods after the reboot.
    daemon_set_pods: int | None = None


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


def blocking_budget(namespace: str, status: Mapping[str, Any]) -> str | None:
    """The budget named in a 429's causes ("The disruption budget web needs 2 healthy pods")."""
    for cause in (status.get("details") or {}).get("causes") or []:
        is_budget = DISRUPTION_BUDGET_CAUSE in (cause.get("reason"), cause.get("type"))
        match = _BUDGET_NAME_PATTERN.search(str(cause.get("message", "")))
        if is_budget and match:
            return f"{namespace}/{match.group(1)}"
    return None


def evict_once(api: JsonApi, pod: PodRef, grace_period_seconds: int | None) -> _EvictionAnswer:
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
    try:
        api.create(f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/eviction", body)
    except ApiException as error:
        status = _status_of(error)
        message = str(status.get("message") or error.reason or error)
        if error.status == 404:
            return _EvictionAnswer(_Outcome.GONE)
        if error.status == 409 and "UID" in message:
            return _EvictionAnswer(_Outcome.GONE)
        if error.status == 429:
            return _EvictionAnswer(_Outcome.BLOCKED, pdb=blocking_budget(pod.namespace, status))
        return _EvictionAnswer(_Outcome.ERROR, error=f"HTTP {error.status}: {message}")
    except Exception as error:  # network trouble: retried with backoff, reported
        return _EvictionAnswer(_Outcome.ERROR, error=f"{type(error).__name__}: {error}")
    return _EvictionAnswer(_Outcome.EVICTED)


def _seconds_until(deadline: datetime) -> float:
    if deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=UTC)
    return max(0.0, (deadline - datetime.now(UTC)).total_seconds())


async def _evict_until_gone(
    api: JsonApi,
    progress: PodProgress,
    tracker: GoneTracker,
    options: DrainOptions,
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
        answer = await asyncio.to_thread(evict_once, api, pod, options.grace_period_seconds)
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
    tracker: GoneTracker,
    budgets: BudgetSignals,
    options: DrainOptions,
) -> None:
    """After a refusal: until the pod is gone, its budget allows a disruption again (a change
    after `mark`), or the retry pace is up, whichever comes first."""
    pace = options.eviction_retry_seconds
    if budget is None:  # an unnamed 429 (the API server's own rate limit, say): the pace
        await tracker.wait_gone(pod, pace)
        return
    await first_of((tracker.wait_gone(pod), budgets.allowed_since(budget, mark, pace)), pace)


async def drain_node(
    api: client.ApiClient,
    node: str,
    options: DrainOptions,
    deadline: datetime,
    watch_list: bool = False,
    budget_watch: BudgetWatch | None = None,
) -> DrainResult:
    """Evict the node's pods (as `kubectl drain` would) until they are gone or the deadline.

    Does not cordon: the caller cordons first (and records whether the node already was). A
    pod that arrives during the drain is evicted too (the scheduler's cache can lag the cordon),
    so on a node left schedulable the drain would chase its workloads' replacements.
    Cancelling stops the evictions and the watch cleanly; calling again resumes.
    `watch_list`: read the node's pods through the watch itself (one request, not two) where
    the server serves watch-lists; without it, a list and a watch. `budget_watch`: a budget
    watch the caller opened and keeps (the brain's shared one), else the drain opens its own at
    its first refusal and closes it at its end.
    """
    json_api = JsonApi(api)
    watch = NodePodWatch(json_api, node, watch_lists=watch_list)
    watch.start()
    try:
        items = await watch.initial
        return await _drain_listed(json_api, node, options, deadline, items, watch, budget_watch)
    finally:
        await watch.stop()


async def _drain_listed(
    api: JsonApi,
    node: str,
    options: DrainOptions,
    deadline: datetime,
    items: list[dict[str, Any]],
    watch: NodePodWatch,
    shared_budgets: BudgetWatch | None = None,
) -> DrainResult:
    """drain_node once the node's pods are known and watched (the caller stops the watch)."""
    to_evict, skipped, problems = classify_pods(items, options)
    # The node's DaemonSet pods (by namespace/name: the watch tells of the same pod again).
    daemon_set_pods = {PodRef.from_pod(pod).key for pod in items if is_daemon_set_pod(pod)}
    if problems:
        listed = "; ".join(map(str, problems))
        return DrainResult(
            completed=False,
            message=f"cannot drain node {node}: {listed}",
            remaining=tuple(problem.pod for problem in problems),
            problems=tuple(problems),
            skipped=len(skipped),
            daemon_set_pods=len(daemon_set_pods),
        )
    if not to_evict:
        return DrainResult(
            completed=True,
            message=f"node {node} has no pods to evict",
            skipped=len(skipped),
            daemon_set_pods=len(daemon_set_pods),
        )

    labels_of = {PodRef.from_pod(pod): (pod.get("metadata") or {}).get("labels") for pod in items}

    tracker = GoneTracker(to_evict)
    progress: dict[PodRef, PodProgress] = {}
    workers: list[asyncio.Task[None]] = []
    # By pod: a refused pod's later events (kwok starting it, say) may come before the drain
    # has stopped, and must not report it twice.
    arrived_problems: dict[tuple[str, str], DrainProblem] = {}
    problem_arrived = asyncio.Event()
    ending = False
    refusals = RefusalLog(node)
    budget_watch: BudgetSignals = shared_budgets or BudgetWatch(api)

    def evict(pod: PodRef) -> None:
        progress[pod] = PodProgress(pod)
        workers.append(
            asyncio.create_task(
                _evict_until_gone(api, progress[pod], tracker, options, refusals, budget_watch)
            )
        )

    def on_arrival(pod: Mapping[str, Any]) -> None:
        # The scheduler can still bind a pod here for a moment after the cordon (its cache has
        # not seen it yet). Such a pod is drained like the others, not left to the reboot.
        if is_daemon_set_pod(pod):  # one placed during the drain is waited for too
            daemon_set_pods.add(PodRef.from_pod(pod).key)
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
    watch.attach(tracker)
    for pod in to_evict:
        evict(pod)
    try:
        await first_of((tracker.all_gone.wait(), problem_arrived.wait()), _seconds_until(deadline))
    finally:
        ending = True
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await watch.stop()  # before the budgets are read: no pod event lands after this
        if shared_budgets is None:
            await budget_watch.stop()

    # The budgets covering the evicted pods: what the budget watch (the brain's shared one, or a
    # refused drain's) has seen, else a list.
    budgets = budget_watch.budgets()
    if budgets is None and shared_budgets is not None:
        view = await shared_budgets.settled(SHARED_SETTLE_SECONDS)
        budgets = None if view is None else list(view.values())
    if budgets is None:
        budgets = await asyncio.to_thread(list_budgets, api)
    remaining_keys = set(tracker.remaining())
    stuck = [item for pod, item in progress.items() if pod.key in remaining_keys]
    removed = [pod for pod in progress if pod.key not in remaining_keys]
    covering = covering_budgets(budgets, {pod: labels_of.get(pod) for pod in removed})
    pdbs = sorted({budget for pod in removed for budget in covering.get(pod, [])})
    blocking = sorted({item.blocking_pdb for item in stuck if item.blocking_pdb and item.blocked})
    attempts = sum(item.attempts for item in progress.values())
    refused = list(arrived_problems.values())
    if refused:
        listed = "; ".join(map(str, refused))
        message = f"cannot drain node {node}: arrived during the drain: {listed}"
    elif not stuck:
        message = f"drained node {node}: {plural(len(removed), 'pod')} evicted"
    else:
        message = timeout_message(stuck)
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
        daemon_set_pods=len(daemon_set_pods),
    )


async def first_of(waits: Iterable[Coroutine[Any, Any, Any]], at_most_seconds: float) -> None:
    """Wait until the first of `waits` finishes or `at_most_seconds` pass; cancel the others."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, timeout=at_most_seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def force_delete(
    api: client.ApiClient,
    pods: Iterable[PodRef],
    grace_period_seconds: int | None = None,
) -> int:
    """onTimeout=Force: delete pods directly, ignoring their budgets; returns how many deleted.

    Pods already gone (404) or replaced (UID precondition fails, 409) are left alone.
    """
    json_api = JsonApi(api)
    deleted = 0
    for pod in pods:
        body: dict[str, Any] = {"preconditions": {"uid": pod.uid}} if pod.uid else {}
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        try:
            await asyncio.to_thread(
                json_api.delete, f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}", body
            )
        except ApiException as error:
            if error.status in (404, 409):
                continue
            raise
        deleted += 1
    return deleted
