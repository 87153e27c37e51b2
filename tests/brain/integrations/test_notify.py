"""Notifications through a real apprise URL (json://) to a loopback HTTP endpoint."""

from __future__ import annotations

import base64
import time

from brain.integrations.notify import (
    FailureKind,
    Notifier,
    NotifyEvent,
    NotifyTarget,
    parse_targets,
    targets_from_secret_data,
)
from tests.brain.loopback import Reply, loopback_server


def json_url(port: int, path: str) -> str:
    return f"json://127.0.0.1:{port}/{path}"


def test_bodies_name_node_window_phase_and_reason() -> None:
    with loopback_server(Reply(status=200)) as server:
        notifier = Notifier([NotifyTarget(json_url(server.port, "hook"))], ["Failed", "Started"])
        assert notifier.send(
            NotifyEvent.FAILED, "weekend", "node-7", "WaitingForNode", "not back within 15m"
        )
        assert not notifier.send(NotifyEvent.SUCCEEDED, "weekend", "node-7", "Done")
        assert notifier.send(NotifyEvent.STARTED, "weekend", "node-8", "Draining")
        (failed, started) = server.wait_for_requests(2)
        notifier.close()
    assert failed.path == "/hook" and failed.method == "POST"
    body = failed.json()
    assert body["title"] == "Pitstop: Failed - node node-7"
    assert body["type"] == "failure"
    assert body["message"].splitlines() == [
        "Event: Failed",
        "Window: weekend",
        "Node: node-7",
        "Phase: WaitingForNode",
        "Reason: not back within 15m",
    ]
    assert started.json()["type"] == "info" and "Node: node-8" in started.json()["message"]
    assert notifier.sent == 2 and notifier.failed == 0


def test_tags_limit_a_url_to_some_events() -> None:
    with loopback_server(Reply(status=200)) as server:
        text = (
            "# the team channel gets everything, the pager only failures\n"
            f"{json_url(server.port, 'team')}\n"
            f"failed, blocked = {json_url(server.port, 'pager')}\n"
        )
        targets, problems = parse_targets(text)
        assert problems == []
        assert [target.tags for target in targets] == [frozenset(), {"failed", "blocked"}]
        notifier = Notifier(targets, [event.value for event in NotifyEvent])
        notifier.send(NotifyEvent.SUCCEEDED, "w", "n1", "Done")
        notifier.send(NotifyEvent.BLOCKED, "w", reason="PrometheusAlerts: NodeDiskFull")
        server.wait_for_requests(3)
        notifier.close()
    paths = sorted(request.path for request in server.requests)
    assert paths == ["/pager", "/team", "/team"]
    blocked = next(r.json() for r in server.requests if r.path == "/pager")
    assert blocked["title"] == "Pitstop: Blocked - window w"
    assert "Node:" not in blocked["message"]


def test_failing_endpoint_is_counted_never_raised() -> None:
    failures: list[FailureKind] = []
    with loopback_server(Reply(status=500)) as server:
        notifier = Notifier(
            [NotifyTarget(json_url(server.port, "x"))], ["Failed"], on_failure=failures.append
        )
        assert notifier.send("Failed", "w", "n", "Failed", "boom")
        server.wait_for_requests(1)
        deadline = time.monotonic() + 10
        while not failures and time.monotonic() < deadline:
            time.sleep(0.02)
        notifier.close()
    assert failures == [FailureKind.SEND_FAILED]
    assert notifier.failed == 1 and notifier.sent == 0


def test_full_queue_drops_and_counts_without_blocking() -> None:
    failures: list[FailureKind] = []
    # The endpoint takes 1 s per message: the worker is busy while the queue fills.
    with loopback_server(Reply(status=200, delay_seconds=1.0)) as server:
        notifier = Notifier(
            [NotifyTarget(json_url(server.port, "slow"))],
            ["Started"],
            on_failure=failures.append,
            queue_size=2,
        )
        notifier.send("Started", "w", "n0")
        server.wait_for_requests(1)  # the worker holds n0: the queue is empty
        started = time.monotonic()
        results = [notifier.send("Started", "w", f"n{index}") for index in range(1, 5)]
        assert time.monotonic() - started < 0.5
        assert results == [True, True, False, False]
        assert failures == [FailureKind.QUEUE_FULL, FailureKind.QUEUE_FULL]
        server.wait_for_requests(3, timeout=15)
        notifier.close(timeout_seconds=15)
    nodes = [request.json()["message"].splitlines()[2] for request in server.requests]
    assert nodes == ["Node: n0", "Node: n1", "Node: n2"]
    assert notifier.dropped == 2 and notifier.sent == 3


def test_secret_data_base64_and_key_selection() -> None:
    def encode(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    data = {
        "urls": encode("json://127.0.0.1:9/a\nfailed=json://127.0.0.1:9/b"),
        "other": encode("not-a-url\nbogus://x"),
    }
    targets, problems = targets_from_secret_data(data, key="urls")
    assert [t.url for t in targets] == ["json://127.0.0.1:9/a", "json://127.0.0.1:9/b"]
    assert problems == []
    targets, problems = targets_from_secret_data(data)
    assert len(targets) == 2
    assert problems == [
        "key 'other' line 1: not a valid apprise URL (scheme (no scheme))",
        "key 'other' line 2: not a valid apprise URL (scheme bogus)",
    ]
    assert targets_from_secret_data(data, key="missing") == (
        [],
        ["the Secret has no key 'missing'"],
    )
    plain, _ = targets_from_secret_data({"u": "json://127.0.0.1:9/p"}, base64_encoded=False)
    assert plain == [NotifyTarget("json://127.0.0.1:9/p")]


def test_unselected_events_and_closed_notifier_send_nothing() -> None:
    with loopback_server(Reply(status=200)) as server:
        notifier = Notifier([NotifyTarget(json_url(server.port, "x"))], ["rolloutcomplete"])
        assert notifier.send("RolloutComplete", "w")
        server.wait_for_requests(1)
        notifier.close()
        assert not notifier.send("RolloutComplete", "w")
        time.sleep(0.2)
    assert len(server.requests) == 1
    assert server.requests[0].json()["type"] == "success"
