"""Patch bodies and the reconciler's decisions (one PATCH per change, re-assertion, backoff)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from detector.backoff import Backoff
from detector.kube import ApiError
from detector.metrics import Status
from detector.reconciler import Reconciler
from detector.report import NodeSnapshot, Report, node_matches, patch_body, rfc3339, wanted_report
from detector.sentinel import SentinelState
from pitstop import contract

NOW = datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
LABEL = contract.REBOOT_REQUIRED_LABEL
SINCE = contract.REBOOT_REQUIRED_SINCE_ANNOTATION
REASON = contract.REBOOT_REASON_ANNOTATION
KURED = contract.KURED_REBOOT_NEEDED_ANNOTATION


def test_rfc3339() -> None:
    assert rfc3339(NOW) == "2025-03-01T12:30:15Z"


def test_patch_body_when_required() -> None:
    report = Report(required=True, reason="linux", since="2025-03-01T12:30:15Z")
    assert patch_body(report, kured_compatibility=False) == {
        "metadata": {
            "labels": {LABEL: "true"},
            "annotations": {SINCE: "2025-03-01T12:30:15Z", REASON: "linux"},
        }
    }
    with_kured = patch_body(report, kured_compatibility=True)
    assert with_kured["metadata"]["annotations"][KURED] == "2025-03-01T12:30:15Z"


def test_patch_body_when_cleared_removes_with_null() -> None:
    body = patch_body(Report(required=False), kured_compatibility=True)
    assert body == {
        "metadata": {"labels": {LABEL: None}, "annotations": {SINCE: None, REASON: None}}
    }


def test_empty_reason_removes_the_annotation() -> None:
    body = patch_body(Report(True, "", "t"), kured_compatibility=False)
    assert body["metadata"]["annotations"][REASON] is None


def node(
    labels: Mapping[str, str] = {},
    annotations: Mapping[str, str] = {},
    uid: str = "u1",
    version: str = "10",
) -> NodeSnapshot:
    return NodeSnapshot(uid, version, dict(labels), dict(annotations))


def test_wanted_report_keeps_the_nodes_since() -> None:
    reported = node({LABEL: "true"}, {SINCE: "2020-01-01T00:00:00Z"})
    assert wanted_report(True, "r", reported, NOW).since == "2020-01-01T00:00:00Z"
    # Label removed by someone: the old annotation is not trusted, the first sighting is used.
    assert wanted_report(True, "r", node({}, {SINCE: "x"}), NOW).since == rfc3339(NOW)
    assert wanted_report(False, "r", reported, NOW) == Report(False)


def test_node_matches() -> None:
    report = Report(True, "r", "2020-01-01T00:00:00Z")
    full = node({LABEL: "true"}, {SINCE: "2020-01-01T00:00:00Z", REASON: "r"})
    assert node_matches(full, report, False)
    assert not node_matches(full, report, True)  # kured annotation missing
    assert not node_matches(node({}, {SINCE: "x", REASON: "r"}), report, False)
    assert not node_matches(node({LABEL: "true"}, {SINCE: "x", REASON: "other"}), report, False)
    assert node_matches(node(), Report(False), False)
    assert not node_matches(node({}, {REASON: "left over"}), Report(False), False)


def test_older_resource_version() -> None:
    assert node(version="9").is_older_than(node(version="10"))
    assert not node(version="10").is_older_than(node(version="9"))
    assert not node(version="9", uid="u2").is_older_than(node(version="10"))
    assert not node(version="abc").is_older_than(node(version="10"))


def test_backoff_doubles_with_jitter_and_caps() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    nominal = [0.5, 1, 2, 4, 4, 4, 4, 4]
    for delay, expected in zip(delays, nominal, strict=True):
        assert expected / 2 <= delay <= expected
    assert len(set(delays)) == len(delays)  # jittered, not a fixed ladder
    backoff.reset()
    assert backoff.next_delay() <= 0.5
    with pytest.raises(ValueError):
        Backoff(2, 1)


class FakeApi:
    """Applies merge patches to an in-memory Node like the API server does (labels and
    annotations only), or fails with a given error."""

    def __init__(self, snapshot: NodeSnapshot) -> None:
        self.node = snapshot
        self.bodies: list[dict[str, Any]] = []
        self.fail_with: ApiError | None = None

    def patch_node(self, body: Mapping[str, Any]) -> dict[str, Any]:
        self.bodies.append(dict(body))
        if self.fail_with is not None:
            raise self.fail_with
        labels = dict(self.node.labels)
        annotations = dict(self.node.annotations)
        for target, changes in (
            (labels, body["metadata"]["labels"]),
            (annotations, body["metadata"]["annotations"]),
        ):
            for key, value in changes.items():
                if value is None:
                    target.pop(key, None)
                else:
                    target[key] = value
        version = str(int(self.node.resource_version) + 1)
        self.node = NodeSnapshot(self.node.uid, version, labels, annotations)
        return {
            "metadata": {
                "uid": self.node.uid,
                "resourceVersion": version,
                "labels": labels,
                "annotations": annotations,
            }
        }


def reconciler_for(api: FakeApi, kured: bool = False) -> tuple[Reconciler, Status]:
    status = Status(stale_after_seconds=60)
    backoff = Backoff(0.5, 4, random.Random(1))
    return Reconciler(api, status, kured, backoff, now=lambda: NOW), status


def test_one_patch_per_change_and_none_when_nothing_changes() -> None:
    api = FakeApi(node())
    reconciler, status = reconciler_for(api)
    reconciler.handle("node", api.node)
    reconciler.handle("sentinel", SentinelState(False))
    assert api.bodies == []  # the Node already says "no reboot"
    assert status.healthy()
    reconciler.handle("sentinel", SentinelState(True, "kernel"))
    assert len(api.bodies) == 1
    assert api.node.labels == {LABEL: "true"}
    assert api.node.annotations == {SINCE: rfc3339(NOW), REASON: "kernel"}
    reconciler.handle("node", api.node)  # the watch echoes our own change
    reconciler.handle("sentinel", SentinelState(True, "kernel"))
    assert len(api.bodies) == 1
    reconciler.handle("sentinel", SentinelState(False))
    assert len(api.bodies) == 2
    assert api.node.labels == {} and api.node.annotations == {}


def test_stale_echo_from_before_our_patch_is_ignored() -> None:
    api = FakeApi(node())
    reconciler, _ = reconciler_for(api)
    before = api.node
    reconciler.handle("node", before)
    reconciler.handle("sentinel", SentinelState(True, "r"))
    reconciler.handle("node", before)  # an event still in flight from before the PATCH
    assert len(api.bodies) == 1


def test_reasserts_after_label_removed_and_node_recreated() -> None:
    api = FakeApi(node())
    reconciler, _ = reconciler_for(api)
    reconciler.handle("node", api.node)
    reconciler.handle("sentinel", SentinelState(True, "r"))
    since = api.node.annotations[SINCE]
    # Someone removes the label.
    stripped = NodeSnapshot(api.node.uid, "50", {}, dict(api.node.annotations))
    api.node = stripped
    reconciler.handle("node", stripped)
    assert len(api.bodies) == 2 and api.node.labels == {LABEL: "true"}
    # The Node is deleted, then created again with a new uid and a low resource version.
    reconciler.handle("node", None)
    assert len(api.bodies) == 2
    api.node = NodeSnapshot("u2", "3", {"kubernetes.io/hostname": "n"}, {})
    reconciler.handle("node", api.node)
    assert len(api.bodies) == 3
    assert api.node.labels[LABEL] == "true"
    assert api.node.annotations[SINCE] == since  # first sighting, not the recreation time


def test_restart_keeps_the_reported_since_and_sends_nothing() -> None:
    api = FakeApi(node({LABEL: "true"}, {SINCE: "2020-01-01T00:00:00Z", REASON: "r"}))
    reconciler, status = reconciler_for(api)
    reconciler.handle("sentinel", SentinelState(True, "r"))
    reconciler.handle("node", api.node)
    assert api.bodies == []
    assert status.snapshot().last_report_timestamp > 0


def test_api_errors_back_off_count_and_mark_unhealthy() -> None:
    api = FakeApi(node())
    reconciler, status = reconciler_for(api)
    reconciler.handle("node", api.node)
    api.fail_with = ApiError(0, "connection refused")
    reconciler.handle("sentinel", SentinelState(True, "r"))
    assert reconciler.retry_pending
    assert status.snapshot().api_errors_total == 1
    reconciler.handle("sentinel", SentinelState(True, "r2"))  # waits for the retry time
    assert len(api.bodies) == 1
    unreported = status.snapshot().unreported_since
    assert unreported is not None
    assert not status.healthy(now=unreported + 61)
    api.fail_with = None
    reconciler.handle("retry", None)
    assert len(api.bodies) == 2 and api.node.annotations[REASON] == "r2"
    assert status.healthy(now=unreported + 1000)
    assert reconciler.backoff.attempts == 0


def test_node_gone_waits_for_the_watch() -> None:
    api = FakeApi(node())
    reconciler, _ = reconciler_for(api)
    reconciler.handle("node", api.node)
    api.fail_with = ApiError(404, "not found")
    reconciler.handle("sentinel", SentinelState(True, "r"))
    assert not reconciler.retry_pending  # no retry loop against a missing Node
    api.fail_with = None
    reconciler.handle("node", NodeSnapshot("u9", "1", {}, {}))
    assert api.node.labels == {LABEL: "true"}


def test_kured_annotation_written_and_left_when_cleared() -> None:
    api = FakeApi(node())
    reconciler, _ = reconciler_for(api, kured=True)
    reconciler.handle("node", api.node)
    reconciler.handle("sentinel", SentinelState(True, ""))
    assert api.node.annotations[KURED] == rfc3339(NOW)
    assert REASON not in api.node.annotations
    reconciler.handle("sentinel", SentinelState(False))
    assert api.node.annotations == {KURED: rfc3339(NOW)}
