"""Blockers against a real HTTP server on loopback playing Prometheus (and Alertmanager)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from kubernetes import client

from brain.core.window import PodBlocker
from brain.integrations.blockers import (
    NOT_BLOCKED,
    BlockerConfig,
    PodSelector,
    PrometheusConfig,
    Reason,
    all_blockers,
    check_node_annotations,
    check_pods,
    check_prometheus,
    first_blocker,
)
from brain.integrations.blockers.prometheus import alerts_url
from tests.brain.loopback import Reply, loopback_server, refused_port


def prometheus_answer(*alerts: tuple[str, str]) -> dict[str, Any]:
    """The body of Prometheus' /api/v1/alerts with (alertname, state) alerts."""
    return {
        "status": "success",
        "data": {
            "alerts": [
                {
                    "labels": {"alertname": name, "severity": "warning"},
                    "annotations": {},
                    "state": state,
                    "activeAt": "2025-01-01T00:00:00Z",
                    "value": "1e+00",
                }
                for name, state in alerts
            ]
        },
    }


def check(config: PrometheusConfig, timeout: float = 5.0) -> Any:
    return asyncio.run(check_prometheus(config, timeout_seconds=timeout))


def test_no_alerts_does_not_block_and_asks_the_alerts_api() -> None:
    with loopback_server(Reply.json(prometheus_answer())) as server:
        result = check(PrometheusConfig(url=server.url + "/"))
        assert result == NOT_BLOCKED
        assert [request.path for request in server.requests] == ["/api/v1/alerts"]


def test_firing_alert_blocks_and_is_named() -> None:
    answer = prometheus_answer(("NodeDiskFull", "firing"), ("Watchdog2", "pending"))
    with loopback_server(Reply.json(answer)) as server:
        result = check(PrometheusConfig(url=server.url))
    assert result.blocked
    assert result.reason == Reason.PROMETHEUS_ALERTS
    assert "NodeDiskFull" in result.message
    # firingOnly is the default: the pending alert is not counted.
    assert "Watchdog2" not in result.message
    assert "1 alert is active" in result.message


def test_pending_alert_blocks_unless_firing_only() -> None:
    answer = prometheus_answer(("SlowBurn", "pending"))
    with loopback_server(Reply.json(answer)) as server:
        assert check(PrometheusConfig(url=server.url, firing_only=True)) == NOT_BLOCKED
        result = check(PrometheusConfig(url=server.url, firing_only=False))
    assert result.blocked and "SlowBurn" in result.message


def test_alert_filter_ignores_matching_alerts() -> None:
    answer = prometheus_answer(("Watchdog", "firing"), ("RebootRequired", "firing"))
    with loopback_server(Reply.json(answer)) as server:
        config = PrometheusConfig(url=server.url, alert_filter="^(Watchdog|RebootRequired)$")
        assert check(config) == NOT_BLOCKED
        # An unanchored pattern is searched, like kured's Go regexp.MatchString.
        partial = check(PrometheusConfig(url=server.url, alert_filter="Watch"))
    assert partial.blocked
    assert "RebootRequired" in partial.message and "Watchdog" not in partial.message


def test_filter_match_only_blocks_only_on_matching_alerts() -> None:
    answer = prometheus_answer(("KubeNodeNotReady", "firing"), ("SomethingElse", "firing"))
    with loopback_server(Reply.json(answer)) as server:
        result = check(
            PrometheusConfig(url=server.url, alert_filter="^KubeNode", filter_match_only=True)
        )
        quiet = check(
            PrometheusConfig(url=server.url, alert_filter="^Etcd", filter_match_only=True)
        )
    assert result.blocked
    assert "KubeNodeNotReady" in result.message and "SomethingElse" not in result.message
    assert quiet == NOT_BLOCKED


def test_many_alerts_are_summarised() -> None:
    answer = prometheus_answer(*((f"Alert{index:02d}", "firing") for index in range(12)))
    with loopback_server(Reply.json(answer)) as server:
        result = check(PrometheusConfig(url=server.url))
    assert "12 alerts are active" in result.message
    assert "Alert00" in result.message and "and 7 more" in result.message
    assert "Alert11" not in result.message


def test_server_error_blocks_as_unreachable() -> None:
    with loopback_server(Reply(status=500, body=b"oops")) as server:
        result = check(PrometheusConfig(url=server.url))
    assert result.blocked
    assert result.reason == Reason.PROMETHEUS_UNREACHABLE
    assert result.message.startswith(f"cannot reach {server.url}/api/v1/alerts")
    assert "HTTP 500" in result.message


@pytest.mark.parametrize(
    "body",
    [b"<html>not json</html>", b'{"status": "error", "error": "x"}', b'{"status": "success"}'],
)
def test_garbage_answer_blocks_as_unreachable(body: bytes) -> None:
    with loopback_server(Reply(body=body)) as server:
        result = check(PrometheusConfig(url=server.url))
    assert result.blocked and result.reason == Reason.PROMETHEUS_UNREACHABLE
    assert "cannot reach" in result.message


def test_hanging_server_blocks_within_the_timeout() -> None:
    with loopback_server(Reply.json(prometheus_answer(), delay_seconds=30)) as server:
        started = time.monotonic()
        result = check(PrometheusConfig(url=server.url), timeout=0.5)
        elapsed = time.monotonic() - started
    assert result.blocked and result.reason == Reason.PROMETHEUS_UNREACHABLE
    assert "no answer within 0.5 s" in result.message
    assert elapsed < 5


def test_connection_refused_blocks_as_unreachable() -> None:
    result = check(PrometheusConfig(url=f"http://127.0.0.1:{refused_port()}"))
    assert result.blocked and result.reason == Reason.PROMETHEUS_UNREACHABLE
    assert "cannot reach" in result.message


def test_alertmanager_v2_skips_suppressed_alerts() -> None:
    answer = [
        {"labels": {"alertname": "Muted"}, "status": {"state": "suppressed"}},
        {"labels": {"alertname": "Loud"}, "status": {"state": "active"}},
    ]
    with loopback_server(Reply.json(answer)) as server:
        url = server.url + "/api/v2/alerts"
        result = check(PrometheusConfig(url=url))
        assert [request.path for request in server.requests] == ["/api/v2/alerts"]
    assert result.blocked and "Loud" in result.message and "Muted" not in result.message


def test_alerts_url_keeps_a_path_prefix() -> None:
    assert alerts_url("http://prom:9090/prometheus/") == "http://prom:9090/prometheus/api/v1/alerts"
    assert alerts_url("http://am:9093/api/v2/alerts") == "http://am:9093/api/v2/alerts"


def test_invalid_filter_blocks_with_its_own_reason() -> None:
    with loopback_server(Reply.json(prometheus_answer(("A", "firing")))) as server:
        result = check(PrometheusConfig(url=server.url, alert_filter="(unclosed"))
    assert result.blocked and result.reason == Reason.INVALID_BLOCKER


def test_node_annotations_block_and_name_nodes() -> None:
    nodes = {"n1": {"a", "backup.example.com/running"}, "n2": {"b"}, "n3": set[str]()}
    result = check_node_annotations(["backup.example.com/running", "zzz"], nodes)
    assert result.blocked and result.reason == Reason.NODE_ANNOTATION
    assert "n1 (backup.example.com/running)" in result.message
    assert "n2" not in result.message
    assert check_node_annotations(["zzz"], nodes) == NOT_BLOCKED
    assert check_node_annotations([], nodes) == NOT_BLOCKED


def test_a_pod_blocker_entry_becomes_the_apis_selector_text() -> None:
    selector = {
        "matchLabels": {"app": "backup"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
            {"key": "critical", "operator": "Exists"},
            {"key": "skip", "operator": "DoesNotExist"},
        ],
    }
    entry = {"namespaceSelector": {"matchLabels": {"team": "x"}}, "labelSelector": selector}
    pod_selector = PodSelector.from_spec(PodBlocker.model_validate(entry))
    assert pod_selector.label_selector == "app=backup,tier in (a,b),env notin (dev),critical,!skip"
    assert pod_selector.namespace_selector == "team=x"
    unscoped = PodSelector.from_spec(PodBlocker.model_validate({"labelSelector": {}}))
    assert unscoped.label_selector == "" and unscoped.namespace_selector is None


def test_combined_checks_cheapest_first_and_can_report_all() -> None:
    nodes = {"n1": {"hold"}}
    with loopback_server(Reply.json(prometheus_answer(("Fire", "firing")))) as server:
        config = BlockerConfig(
            prometheus=PrometheusConfig(url=server.url), node_annotations=("hold",)
        )
        first = asyncio.run(first_blocker(config, nodes))
        # The annotation blocks first: Prometheus was not even asked.
        assert first.reason == Reason.NODE_ANNOTATION
        assert server.requests == []
        every = asyncio.run(all_blockers(config, nodes))
        assert [result.reason for result in every] == [
            Reason.NODE_ANNOTATION,
            Reason.PROMETHEUS_ALERTS,
        ]
        assert asyncio.run(first_blocker(config, {"n1": set()})).reason == (
            Reason.PROMETHEUS_ALERTS
        )
    assert asyncio.run(first_blocker(BlockerConfig(), nodes)) == NOT_BLOCKED


def test_unreachable_api_server_blocks_the_pod_check() -> None:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{refused_port()}"
    configuration.retries = 0
    with client.ApiClient(configuration) as api_client:
        result = asyncio.run(
            check_pods(api_client, [PodSelector(label_selector="app=x")], timeout_seconds=2)
        )
    assert result.blocked and result.reason == Reason.POD_CHECK_FAILED
    assert result.message.startswith("cannot list pods matching 'app=x' in any namespace")
