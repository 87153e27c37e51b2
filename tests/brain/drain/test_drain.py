"""The drain's pure parts: which pods a drain evicts, skips or refuses, and how it reports."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from brain.core.selectors import parse_selector
from brain.drain.budget_watch import BudgetWatch
from brain.drain.node_drain import (
    DrainOptions,
    PodRef,
    RefusalLog,
    RequestCounter,
    _blocking_budget,
    _covering_budgets,
    _drain_listed,
    _evict_once,
    _GoneTracker,
    _NodePodWatch,
    _PodProgress,
    _timeout_message,
    classify_pods,
)


def pod(
    name: str,
    *,
    namespace: str = "default",
    owner: str | None = "ReplicaSet",
    phase: str = "Running",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    volumes: list[dict[str, Any]] | None = None,
    uid: str | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid or f"uid-{name}",
        "labels": labels or {},
        "annotations": annotations or {},
    }
    if owner is not None:
        metadata["ownerReferences"] = [
            {"kind": owner, "name": f"{name}-owner", "controller": True, "uid": "x"}
        ]
    return {"metadata": metadata, "spec": {"volumes": volumes or []}, "status": {"phase": phase}}


DEFAULTS = DrainOptions()
EMPTY_DIR = [{"name": "scratch", "emptyDir": {}}]


def names(refs: list[PodRef]) -> list[str]:
    return [ref.name for ref in refs]


def test_replicated_pods_are_evicted() -> None:
    to_evict, skipped, problems = classify_pods([pod("web-1"), pod("web-2")], DEFAULTS)
    assert names(to_evict) == ["web-1", "web-2"]
    assert to_evict[0] == PodRef("default", "web-1", "uid-web-1")
    assert skipped == [] and problems == []


def test_daemonset_pods_are_skipped_even_with_emptydir_and_no_force() -> None:
    to_evict, skipped, problems = classify_pods(
        [pod("agent", owner="DaemonSet", volumes=EMPTY_DIR)], DEFAULTS
    )
    assert to_evict == [] and problems == []
    assert [(s.pod.name, s.reason) for s in skipped] == [("agent", "DaemonSet-managed pod")]


def test_mirror_pods_are_skipped_even_without_a_controller() -> None:
    static = pod("etcd", owner=None, annotations={"kubernetes.io/config.mirror": "abc"})
    to_evict, skipped, problems = classify_pods([static], DEFAULTS)
    assert to_evict == [] and problems == []
    assert skipped[0].pod.name == "etcd" and "mirror" in skipped[0].reason


def test_a_non_controller_owner_does_not_count_as_a_controller() -> None:
    owned = pod("loose", owner=None)
    owned["metadata"]["ownerReferences"] = [{"kind": "ConfigMap", "name": "c", "uid": "y"}]
    _, _, problems = classify_pods([owned], DEFAULTS)
    assert [p.pod.name for p in problems] == ["loose"]


def test_a_bare_pod_is_refused_without_force_and_named() -> None:
    to_evict, _, problems = classify_pods([pod("bare", owner=None), pod("web")], DEFAULTS)
    assert names(to_evict) == ["web"]
    assert len(problems) == 1
    assert problems[0].pod == PodRef("default", "bare", "uid-bare")
    assert "no controller" in problems[0].reason
    assert str(problems[0]).startswith("default/bare: ")


def test_a_bare_pod_is_evicted_with_force() -> None:
    to_evict, _, problems = classify_pods([pod("bare", owner=None)], DrainOptions(force=True))
    assert names(to_evict) == ["bare"] and problems == []


def test_emptydir_pods_need_delete_emptydir_data() -> None:
    cache = pod("cache", volumes=EMPTY_DIR)
    _, _, problems = classify_pods([cache], DEFAULTS)
    assert [p.pod.name for p in problems] == ["cache"] and "emptyDir" in problems[0].reason
    to_evict, _, problems = classify_pods([cache], DrainOptions(delete_emptydir_data=True))
    assert names(to_evict) == ["cache"] and problems == []


def test_other_volume_kinds_need_nothing() -> None:
    configured = pod("configured", volumes=[{"name": "c", "configMap": {"name": "c"}}])
    to_evict, _, problems = classify_pods([configured], DEFAULTS)
    assert names(to_evict) == ["configured"] and problems == []


def test_a_pod_failing_both_checks_gets_both_reasons() -> None:
    _, _, problems = classify_pods([pod("both", owner=None, volumes=EMPTY_DIR)], DEFAULTS)
    assert len(problems) == 1
    assert "no controller" in problems[0].reason and "emptyDir" in problems[0].reason
    # force alone leaves the emptyDir refusal.
    _, _, problems = classify_pods(
        [pod("both", owner=None, volumes=EMPTY_DIR)], DrainOptions(force=True)
    )
    assert "no controller" not in problems[0].reason and "emptyDir" in problems[0].reason


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_finished_pods_are_removed_freely(phase: str) -> None:
    done = pod("done", owner=None, phase=phase, volumes=EMPTY_DIR)
    to_evict, skipped, problems = classify_pods([done], DEFAULTS)
    assert names(to_evict) == ["done"] and skipped == [] and problems == []


def test_pods_outside_the_pod_selector_are_skipped_before_any_other_check() -> None:
    options = DrainOptions(pod_selector=parse_selector("app=web"))
    pods = [
        pod("web", labels={"app": "web"}),
        pod("db", labels={"app": "db"}, owner=None),  # would be refused, but is not selected
        pod("none"),
    ]
    to_evict, skipped, problems = classify_pods(pods, options)
    assert names(to_evict) == ["web"]
    assert sorted(s.pod.name for s in skipped) == ["db", "none"]
    assert all("podSelector" in s.reason for s in skipped)
    assert problems == []


def test_a_selected_daemonset_pod_is_still_skipped() -> None:
    options = DrainOptions(pod_selector=parse_selector("app=agent"))
    to_evict, skipped, _ = classify_pods(
        [pod("agent", owner="DaemonSet", labels={"app": "agent"})], options
    )
    assert to_evict == [] and skipped[0].reason == "DaemonSet-managed pod"


def test_pods_without_labels_or_volumes_keys_are_handled() -> None:
    minimal = {
        "metadata": {
            "name": "m",
            "namespace": "n",
            "uid": "u",
            "ownerReferences": [{"kind": "Job", "controller": True}],
        }
    }
    to_evict, _, _ = classify_pods([minimal], DrainOptions(pod_selector=parse_selector("!skip")))
    assert to_evict == [PodRef("n", "m", "u")]


# -- budgets, trackers and messages ---------------------------------------------------------------


def budget(namespace: str, name: str, selector: dict[str, Any] | None) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name}, "spec": {"selector": selector}}


def test_covering_budgets_match_by_namespace_and_selector() -> None:
    web = PodRef("shop", "web-1", "u1")
    other = PodRef("blog", "web-1", "u2")
    budgets = [
        budget("shop", "web", {"matchLabels": {"app": "web"}}),
        budget("shop", "everything", {}),
        budget("shop", "nothing", None),
        budget("blog", "db", {"matchLabels": {"app": "db"}}),
    ]
    covering = _covering_budgets(budgets, {web: {"app": "web"}, other: {"app": "web"}})
    assert covering[web] == ["shop/web", "shop/everything"]
    assert covering[other] == []


def test_the_blocking_budget_is_read_from_the_429_cause() -> None:
    status = {
        "kind": "Status",
        "code": 429,
        "details": {
            "causes": [
                {
                    "reason": "DisruptionBudget",
                    "message": "The disruption budget web needs 2 healthy pods and has 2 currently",
                }
            ]
        },
    }
    assert _blocking_budget("shop", status) == "shop/web"
    assert (
        _blocking_budget(
            "shop", {"details": {"causes": [{"reason": "Other", "message": "disruption budget x"}]}}
        )
        is None
    )
    assert _blocking_budget("shop", {}) is None


class FakeCore:
    """Answers evictions with a prepared ApiException (or success) and records the bodies."""

    def __init__(self, status: int | None, body: dict[str, Any] | None = None) -> None:
        self.status = status
        self.body = body
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def create_namespaced_pod_eviction(
        self, name: str, namespace: str, body: dict[str, Any], **_: Any
    ) -> None:
        self.calls.append((name, namespace, body))
        if self.status is not None:
            error = ApiException(status=self.status, reason="refused")
            error.body = json.dumps(self.body or {})
            raise error


def test_an_eviction_carries_the_uid_precondition_and_grace_period() -> None:
    core = FakeCore(None)
    answer = _evict_once(core, PodRef("shop", "web-1", "u1"), 7, None)
    assert answer.outcome.value == "evicted"
    ((name, namespace, body),) = core.calls
    assert (name, namespace) == ("web-1", "shop")
    assert body["deleteOptions"] == {"preconditions": {"uid": "u1"}, "gracePeriodSeconds": 7}
    assert body["kind"] == "Eviction" and body["apiVersion"] == "policy/v1"


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (404, {"message": 'pods "web-1" not found'}, "gone"),
        (409, {"message": "the UID in the precondition (u1) does not match"}, "gone"),
        (409, {"message": "the object has been modified"}, "error"),
        (429, {"message": "Cannot evict pod"}, "blocked"),
        (500, {"message": "This pod has more than one PodDisruptionBudget"}, "error"),
    ],
)
def test_eviction_answers(status: int, body: dict[str, Any], outcome: str) -> None:
    answer = _evict_once(FakeCore(status, body), PodRef("shop", "web-1", "u1"), None, None)
    assert answer.outcome.value == outcome
    if outcome == "error":
        assert str(status) in answer.error and body["message"] in answer.error


def test_the_tracker_counts_a_pod_gone_when_deleted_or_replaced() -> None:
    async def scenario() -> list[tuple[str, str]]:
        first, second, third = (
            PodRef("n", "a", "ua"),
            PodRef("n", "b", "ub"),
            PodRef("n", "c", "uc"),
        )
        tracker = _GoneTracker([first, second, third])
        tracker.on_watch_event("MODIFIED", pod("a", namespace="n", uid="ua"))
        assert not tracker.is_gone(first)
        tracker.on_watch_event("DELETED", pod("a", namespace="n", uid="ua"))
        tracker.on_watch_event("ADDED", pod("b", namespace="n", uid="ub-new"))
        tracker.on_watch_event("DELETED", pod("unrelated", namespace="n"))
        assert tracker.is_gone(first) and tracker.is_gone(second)
        assert not tracker.all_gone.is_set()
        assert await tracker.wait_gone(third, 0.01) is False
        tracker.on_snapshot({("n", "c"): "uc"})
        assert not tracker.is_gone(third)
        remaining = tracker.remaining()
        tracker.on_snapshot({})
        assert tracker.all_gone.is_set()
        return remaining

    assert asyncio.run(scenario()) == [("n", "c")]


def test_the_tracker_hands_arrivals_over_and_waits_for_those_it_is_given() -> None:
    async def scenario() -> None:
        known = PodRef("n", "a", "ua")
        tracker = _GoneTracker([known])
        arrived: list[str] = []
        tracker.on_arrival = lambda pod: arrived.append(pod["metadata"]["name"])
        tracker.on_watch_event("ADDED", pod("late", namespace="n", uid="ul"))
        tracker.on_watch_event("DELETED", pod("other", namespace="n", uid="uo"))
        tracker.on_watch_event("MODIFIED", pod("a", namespace="n", uid="ua"))
        assert arrived == ["late"]  # not the deleted pod, not a tracked one
        tracker.on_watch_event("DELETED", pod("a", namespace="n", uid="ua"))
        assert tracker.all_gone.is_set()
        late = PodRef("n", "late", "ul")
        tracker.track(late)
        assert not tracker.all_gone.is_set() and tracker.remaining() == [("n", "late")]
        tracker.on_watch_event("MODIFIED", pod("late", namespace="n", uid="ul"))
        assert arrived == ["late"]  # tracked now: no second hand-over
        tracker.on_watch_event("DELETED", pod("late", namespace="n", uid="ul"))
        assert tracker.all_gone.is_set()

    asyncio.run(scenario())


def test_the_timeout_message_names_the_budget_and_counts_pods() -> None:
    blocked = [
        _PodProgress(PodRef("default", f"web-{i}"), blocked=True, blocking_pdb="default/web")
        for i in range(2)
    ]
    assert _timeout_message(blocked) == (
        "2 pods still protected by PDB default/web at the drain timeout"
    )
    mixed = [
        blocked[0],
        _PodProgress(PodRef("a", "slow"), evicted=True),
        _PodProgress(PodRef("a", "broken"), last_error="HTTP 500: boom"),
    ]
    message = _timeout_message(mixed)
    assert "1 pod still protected by PDB default/web" in message
    assert "1 pod evicted but not gone yet: a/slow" in message
    assert "pod a/broken could not be evicted: HTTP 500: boom" in message


# -- the watch thread, with a fake API ------------------------------------------------------------


class FakeStream:
    """A watch response: yields prepared lines, then blocks until shut down (like a socket)."""

    def __init__(self, lines: list[dict[str, Any]]) -> None:
        self.lines = [json.dumps(line).encode() + b"\n" for line in lines]
        self.shut = threading.Event()
        self.closed = False

    def stream(self, amt: Any = None, decode_content: Any = None) -> Iterator[bytes]:
        yield from self.lines
        self.shut.wait(10)

    def shutdown(self) -> None:
        self.shut.set()

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        pass


class FakeWatchCore:
    """First watch: an expired resourceVersion (410 event); then a re-list; then a quiet watch."""

    def __init__(self, listed: list[dict[str, Any]]) -> None:
        self.listed = listed
        self.calls: list[dict[str, Any]] = []
        self.streams: list[FakeStream] = []
        self.second_watch = threading.Event()

    def list_pod_for_all_namespaces(self, **arguments: Any) -> Any:
        self.calls.append(arguments)
        if not arguments.get("watch"):
            return SimpleNamespace(
                data=json.dumps({"metadata": {"resourceVersion": "50"}, "items": self.listed})
            )
        if len(self.streams) == 0:
            stream = FakeStream(
                [
                    {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
                    {"type": "ERROR", "object": {"kind": "Status", "code": 410}},
                ]
            )
        else:
            stream = FakeStream([])
            self.second_watch.set()
        self.streams.append(stream)
        return stream


def test_the_watch_relists_when_its_version_expired_and_stops_at_once() -> None:
    survivor = pod("b", namespace="n", uid="ub")
    core = FakeWatchCore([survivor])
    counter = RequestCounter()

    async def scenario() -> tuple[bool, bool, float]:
        gone, kept = PodRef("n", "a", "ua"), PodRef("n", "b", "ub")
        tracker = _GoneTracker([gone, kept])
        watch = _NodePodWatch(core, "node-1", "10", tracker, counter)
        watch.start()
        await tracker.wait_gone(gone, 5)
        assert await asyncio.to_thread(core.second_watch.wait, 5)
        started = time.monotonic()
        await watch.stop()
        return tracker.is_gone(gone), tracker.is_gone(kept), time.monotonic() - started

    gone, kept, stop_seconds = asyncio.run(scenario())
    assert gone and not kept
    assert stop_seconds < 2
    watches = [call for call in core.calls if call.get("watch")]
    assert [call["resource_version"] for call in watches] == ["10", "50"]
    assert all(call["field_selector"] == "spec.nodeName=node-1" for call in core.calls)
    assert counter.counts == {"watch-pods": 2, "list-pods": 1}
    assert all(stream.closed for stream in core.streams)


def test_the_brains_own_pod_is_never_evicted_but_its_namesakes_are() -> None:
    options = DrainOptions(keep_pods=frozenset({("pitstop-system", "pitstop-brain-7d9")}))
    to_evict, skipped, problems = classify_pods(
        [
            pod("pitstop-brain-7d9", namespace="pitstop-system"),
            pod("pitstop-brain-7d9", namespace="other"),
        ],
        options,
    )
    assert [(ref.namespace, ref.name) for ref in to_evict] == [("other", "pitstop-brain-7d9")]
    assert [(s.pod.namespace, s.reason) for s in skipped] == [
        ("pitstop-system", "the brain's own pod (it restarts with the node)")
    ]
    assert problems == []


class FakeWatchListCore:
    """A server with watch-lists (initial pods, the end bookmark, then a deletion), or without
    (`sendInitialEvents` refused with 422: a list, then a watch from its resourceVersion)."""

    def __init__(self, serves_watch_list: bool, pods: list[dict[str, Any]]) -> None:
        self.serves_watch_list = serves_watch_list
        self.pods = pods
        self.calls: list[dict[str, Any]] = []
        self.streams: list[FakeStream] = []

    def list_pod_for_all_namespaces(self, **arguments: Any) -> Any:
        self.calls.append(arguments)
        if not arguments.get("watch"):
            return SimpleNamespace(
                data=json.dumps({"metadata": {"resourceVersion": "50"}, "items": self.pods})
            )
        if arguments.get("send_initial_events") and not self.serves_watch_list:
            raise ApiException(status=422, reason="sendInitialEvents is forbidden")
        lines: list[dict[str, Any]] = []
        if arguments.get("send_initial_events"):
            lines += [{"type": "ADDED", "object": item} for item in self.pods]
            end = {"k8s.io/initial-events-end": "true"}
            lines.append(
                {
                    "type": "BOOKMARK",
                    "object": {"metadata": {"resourceVersion": "20", "annotations": end}},
                }
            )
        lines.append({"type": "DELETED", "object": self.pods[0]})
        stream = FakeStream(lines)
        self.streams.append(stream)
        return stream


@pytest.mark.parametrize("serves_watch_list", [True, False])
def test_a_watch_list_reads_the_pods_and_then_watches_them_in_one_request(
    serves_watch_list: bool,
) -> None:
    first, second = pod("a", namespace="n", uid="ua"), pod("b", namespace="n", uid="ub")
    core = FakeWatchListCore(serves_watch_list, [first, second])
    counter = RequestCounter()

    async def scenario() -> tuple[list[str], bool, bool]:
        watch = _NodePodWatch(core, "node-1", None, None, counter)
        watch.start()
        items = await asyncio.wait_for(watch.initial, 5)
        # The deletion may already have arrived: it waits for the tracker, then reaches it.
        await asyncio.sleep(0.1)
        gone, kept = PodRef("n", "a", "ua"), PodRef("n", "b", "ub")
        tracker = _GoneTracker([gone, kept])
        watch.attach(tracker)
        await tracker.wait_gone(gone, 5)
        await watch.stop()
        return (
            [item["metadata"]["name"] for item in items],
            tracker.is_gone(gone),
            (tracker.is_gone(kept)),
        )

    names, gone, kept = asyncio.run(scenario())
    assert names == ["a", "b"]
    assert gone and not kept
    watches = [call for call in core.calls if call.get("watch")]
    if serves_watch_list:
        assert counter.counts == {"watch-pods": 1}
        assert watches[0]["resource_version_match"] == "NotOlderThan"
    else:
        assert counter.counts == {"watch-pods": 2, "list-pods": 1}
        assert watches[-1]["resource_version"] == "50"
    assert all(call["field_selector"] == "spec.nodeName=node-1" for call in core.calls)
    assert all(stream.closed for stream in core.streams)


class FakeArrivalCore(FakeCore):
    """Evictions refused (429); the node's watch shows a bare pod arriving, then starting."""

    def __init__(self) -> None:
        super().__init__(429)
        self.streams: list[FakeStream] = []

    def list_pod_for_all_namespaces(self, **arguments: Any) -> Any:
        pending = pod("late", namespace="n", owner=None, phase="Pending", uid="ul")
        running = pod("late", namespace="n", owner=None, phase="Running", uid="ul")
        stream = FakeStream(
            [{"type": "ADDED", "object": pending}, {"type": "MODIFIED", "object": running}]
        )
        self.streams.append(stream)
        return stream


def test_a_refused_pod_that_arrives_stops_the_drain_and_is_reported_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("brain.drain.node_drain._list_budgets", lambda api, counter: [])
    held = pod("held", namespace="n", uid="uh")
    deadline = datetime.now(UTC) + timedelta(seconds=10)

    result = asyncio.run(
        _drain_listed(
            None, FakeArrivalCore(), "node-1", DEFAULTS, deadline, None, [held], "10", None
        )
    )
    assert not result.completed
    assert [str(problem) for problem in result.problems] == [
        "n/late: has no controller (set force to delete it)"
    ]
    assert result.message == (
        "cannot drain node node-1: arrived during the drain: "
        "n/late: has no controller (set force to delete it)"
    )
    assert sorted(ref.name for ref in result.remaining) == ["held", "late"]


# -- saying why a drain is blocked ------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


WEB_1 = PodRef("shop", "web-1", "u1")
DB_1 = PodRef("shop", "db-1", "u2")


def test_a_blocked_drain_is_told_at_once_then_at_most_once_a_minute() -> None:
    clock = Clock()
    refusals = RefusalLog("node-1", clock=clock)
    lines = []
    for _ in range(30):  # a refusal every 5 s (the retry pace) for 150 s
        lines.append((clock.now - 1000.0, refusals.refused(WEB_1, "shop/web")))
        clock.now += 5.0
    logged = {at: line for at, line in lines if line is not None}
    prefix = "drain of node node-1 blocked: PDB shop/web refuses evicting pod shop/web-1"
    assert logged == {
        0.0: f"{prefix} (for 0 s)",
        60.0: f"{prefix} (for 60 s)",
        120.0: f"{prefix} (for 120 s)",
    }


def test_each_line_names_the_budgets_refusing_since_the_last_one() -> None:
    clock = Clock()
    refusals = RefusalLog("node-1", clock=clock)
    assert refusals.refused(WEB_1, "shop/web") is not None
    clock.now += 10.0
    assert refusals.refused(DB_1, "shop/db") is None  # within the minute: said at the next line
    clock.now += 55.0
    line = refusals.refused(DB_1, "shop/db")
    assert line == (
        "drain of node node-1 blocked: PDB shop/db refuses evicting pod shop/db-1 (for 55 s)"
    ), "shop/web stopped refusing before this minute: not named again"
    clock.now += 30.0
    assert refusals.refused(WEB_1, None) is None
    clock.now += 30.0
    line = refusals.refused(WEB_1, "shop/web")
    assert line == (
        "drain of node node-1 blocked: PDB shop/web refuses evicting pod shop/web-1 (for 0 s); "
        "an unnamed budget (429) refuses evicting pod shop/web-1 (for 30 s)"
    ), "a budget refusing again after more than a minute is counted from its new refusal"


class FakeBlockedCore(FakeCore):
    """Every eviction refused by the budget `web`; the node's watch shows nothing new."""

    def __init__(self) -> None:
        cause = {"reason": "DisruptionBudget", "message": "The disruption budget web needs 2"}
        super().__init__(429, {"code": 429, "details": {"causes": [cause]}})

    def list_pod_for_all_namespaces(self, **arguments: Any) -> Any:
        return FakeStream([])


def test_a_drain_logs_its_blocking_budget_once_however_often_it_retries(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("brain.drain.node_drain._list_budgets", lambda api, counter: [])
    monkeypatch.setattr(
        "brain.drain.node_drain.BudgetWatch",
        lambda _policy, counter: BudgetWatch(FakePolicy(web_budget(0)), counter),
        raising=False,
    )
    core = FakeBlockedCore()
    options = DrainOptions(eviction_retry_seconds=0.05)
    deadline = datetime.now(UTC) + timedelta(seconds=1)
    held = [pod("web-1", namespace="shop", uid="u1"), pod("web-2", namespace="shop", uid="u3")]
    with caplog.at_level("INFO", logger="brain.drain.node_drain"):
        result = asyncio.run(
            _drain_listed(None, core, "node-1", options, deadline, None, held, "10", None)
        )
    assert not result.completed and result.blocking_pdbs == ("shop/web",)
    assert len(core.calls) >= 10, "the evictions were not retried: nothing to rate-limit"
    blocked = [record.getMessage() for record in caplog.records if "blocked" in record.getMessage()]
    assert len(blocked) == 1 and blocked[0].startswith(
        "drain of node node-1 blocked: PDB shop/web refuses evicting pod shop/web-"
    )


# -- retrying a refusal when its budget allows again ------------------------------------------


def web_budget(disruptions_allowed: int, generation: int = 1, observed: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "shop", "name": "web", "generation": generation},
        "status": {"disruptionsAllowed": disruptions_allowed, "observedGeneration": observed},
    }


INITIAL_EVENTS_END = {
    "metadata": {"resourceVersion": "20", "annotations": {"k8s.io/initial-events-end": "true"}}
}


class ScriptedStream(FakeStream):
    """A PDB watch response whose events the test sends as it goes (`send`)."""

    def __init__(self) -> None:
        super().__init__([])
        self.events: queue.Queue[bytes | None] = queue.Queue()

    def send(self, kind: str, budget: dict[str, Any]) -> None:
        self.events.put(json.dumps({"type": kind, "object": budget}).encode() + b"\n")

    def stream(self, amt: Any = None, decode_content: Any = None) -> Iterator[bytes]:
        while (line := self.events.get()) is not None:
            yield line

    def shutdown(self) -> None:
        self.events.put(None)


class FakePolicy:
    """A PDB source: each watch is a ScriptedStream that starts with the budget's current state."""

    def __init__(self, current: dict[str, Any]) -> None:
        self.current = current
        self.streams: list[ScriptedStream] = []
        self.opened = threading.Event()

    def list_pod_disruption_budget_for_all_namespaces(self, **arguments: Any) -> Any:
        assert arguments["watch"] is True
        stream = ScriptedStream()
        stream.send("ADDED", self.current)
        if arguments.get("send_initial_events"):
            stream.send("BOOKMARK", INITIAL_EVENTS_END)
        self.streams.append(stream)
        self.opened.set()
        return stream


class TimedBlockedCore(FakeBlockedCore):
    """Refuses every eviction (budget `web`) and notes when each was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.started = time.monotonic()
        self.times: list[float] = []

    def create_namespaced_pod_eviction(self, *arguments: Any, **keywords: Any) -> None:
        self.times.append(time.monotonic() - self.started)
        super().create_namespaced_pod_eviction(*arguments, **keywords)


def drain_refused_by_web(
    monkeypatch: pytest.MonkeyPatch,
    policy: FakePolicy,
    script: Callable[[ScriptedStream], None],
    retry_seconds: float = 5.0,
    seconds: float = 1.5,
) -> TimedBlockedCore:
    """Drain one pod that `web` refuses for `seconds`, while `script` plays the PDB's changes."""
    monkeypatch.setattr("brain.drain.node_drain._list_budgets", lambda api, counter: [])
    monkeypatch.setattr(
        "brain.drain.node_drain.BudgetWatch",
        lambda _policy, counter: BudgetWatch(policy, counter),
        raising=False,  # the code before budget watches had none: the test fails, not errors
    )

    def play() -> None:
        if policy.opened.wait(seconds):
            script(policy.streams[-1])

    player = threading.Thread(target=play, daemon=True)
    core = TimedBlockedCore()
    options = DrainOptions(eviction_retry_seconds=retry_seconds)
    deadline = datetime.now(UTC) + timedelta(seconds=seconds)
    held = [pod("web-1", namespace="shop", uid="u1")]
    player.start()
    asyncio.run(_drain_listed(None, core, "node-1", options, deadline, None, held, "10", None))
    player.join()
    return core


def test_a_refused_eviction_is_retried_as_soon_as_its_budget_allows_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def replacement_ready(stream: ScriptedStream) -> None:
        time.sleep(0.3)
        stream.send("MODIFIED", web_budget(1))

    core = drain_refused_by_web(monkeypatch, FakePolicy(web_budget(0)), replacement_ready)
    assert len(core.times) == 2, f"evictions at {core.times}: not retried when web allowed one"
    assert 0.3 <= core.times[1] - core.times[0] < 0.8


def test_a_refused_eviction_is_retried_once_per_change_of_its_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def changes(stream: ScriptedStream) -> None:
        time.sleep(0.2)
        stream.send("MODIFIED", web_budget(0))  # a change that allows nothing
        stream.send("MODIFIED", web_budget(1, generation=2, observed=1))  # status not current
        time.sleep(0.2)
        stream.send("MODIFIED", web_budget(1))  # allows: one retry (refused again, say)
        time.sleep(0.4)
        stream.send("MODIFIED", web_budget(2))  # allows again: one more retry

    core = drain_refused_by_web(monkeypatch, FakePolicy(web_budget(0)), changes)
    assert len(core.times) == 3, f"evictions at {core.times}: expected one per allowing change"
    assert 0.35 <= core.times[1] < 0.7 and 0.75 <= core.times[2] < 1.1


def test_a_budget_allowing_when_the_watch_opens_is_retried_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    core = drain_refused_by_web(
        monkeypatch, FakePolicy(web_budget(1)), lambda stream: None, seconds=0.5
    )
    assert len(core.times) >= 2 and core.times[1] < 0.3, core.times


def test_a_budget_that_never_allows_costs_one_eviction_per_pace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def busy_but_refusing(stream: ScriptedStream) -> None:
        for _ in range(25):  # a change every 50 ms, none allowing a disruption
            time.sleep(0.05)
            stream.send("MODIFIED", web_budget(0))

    policy = FakePolicy(web_budget(0))
    core = drain_refused_by_web(
        monkeypatch, policy, busy_but_refusing, retry_seconds=0.4, seconds=1.5
    )
    gaps = [later - earlier for earlier, later in zip(core.times, core.times[1:], strict=False)]
    assert 3 <= len(core.times) <= 4 and all(gap >= 0.38 for gap in gaps), core.times
    assert len(policy.streams) == 1, "one PDB watch per drain"


def test_the_budget_watch_opens_at_the_first_refusal_and_counts_as_one_request() -> None:
    async def scenario() -> tuple[bool, bool, RequestCounter]:
        counter = RequestCounter()
        policy = FakePolicy(web_budget(0))
        watch = BudgetWatch(policy, counter)
        mark = watch.mark()
        opened_before = policy.opened.is_set()
        waited = asyncio.create_task(watch.allowed_since("shop/web", mark, 2.0))
        await asyncio.to_thread(policy.opened.wait, 1.0)
        policy.streams[-1].send("DELETED", web_budget(0))  # gone: nothing refuses any more
        allowed = await waited
        await watch.stop()
        return opened_before, allowed, counter

    opened_before, allowed, counter = asyncio.run(scenario())
    assert not opened_before and allowed
    assert counter.counts == {"watch-pdbs": 1}


def test_the_budget_watch_stands_in_for_the_list_once_its_initial_state_is_complete() -> None:
    async def scenario() -> tuple[object, object, object, bool]:
        policy = FakePolicy(web_budget(0))
        watch = BudgetWatch(policy, None)
        before = watch.budgets()  # not opened yet: the drain lists
        waited = asyncio.create_task(watch.allowed_since("shop/web", watch.mark(), 0.3))
        await asyncio.to_thread(policy.opened.wait, 1.0)
        await asyncio.sleep(0.1)
        after = watch.budgets()
        other = dict(web_budget(0), metadata={"namespace": "blog", "name": "db", "generation": 1})
        policy.streams[-1].send("ADDED", other)
        policy.streams[-1].send("DELETED", web_budget(0))
        await asyncio.sleep(0.1)
        later = watch.budgets()
        allowed = await waited
        await watch.stop()
        return before, after, later, allowed

    before, after, later, allowed = asyncio.run(scenario())
    assert before is None
    assert after == [web_budget(0)]
    assert later == [
        dict(web_budget(0), metadata={"namespace": "blog", "name": "db", "generation": 1})
    ]
    assert allowed, "a deleted budget refuses nothing"


class FlakyPolicy(FakePolicy):
    """The first watch fails; the next one (resumed) works."""

    def list_pod_disruption_budget_for_all_namespaces(self, **arguments: Any) -> Any:
        if not self.streams and not getattr(self, "failed", False):
            self.failed = True
            raise ApiException(status=500, reason="flaky")
        return super().list_pod_disruption_budget_for_all_namespaces(**arguments)


def test_a_budget_watch_that_failed_leaves_the_budgets_to_a_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("brain.drain.budget_watch.BACKOFF_FIRST_SECONDS", 0.05)

    async def scenario() -> object:
        policy = FlakyPolicy(web_budget(0))
        watch = BudgetWatch(policy, None)
        waited = asyncio.create_task(watch.allowed_since("shop/web", watch.mark(), 0.5))
        await asyncio.to_thread(policy.opened.wait, 2.0)
        await waited
        await watch.stop()
        return watch.budgets()

    assert asyncio.run(scenario()) is None
