"""The metrics endpoint scraped over real HTTP: names, values, vanishing series, health."""

from __future__ import annotations

import platform
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from brain.integrations.metrics import (
    BrainMetrics,
    MetricsServer,
    NodeSample,
    RebootResult,
    WindowSample,
    start_metrics_server,
)
from brain.integrations.notify import FailureKind
from pitstop.version import version

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def served() -> Iterator[tuple[BrainMetrics, MetricsServer, list[bool]]]:
    metrics = BrainMetrics()
    health = [True]
    server = start_metrics_server(0, metrics, health_check=lambda: health[0], host="127.0.0.1")
    yield metrics, server, health
    server.stop()


def get(server: MetricsServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(server: MetricsServer) -> Samples:
    status, text = get(server, "/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def names(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for (metric, labels), value in samples.items() if metric == name}


def test_node_and_window_gauges_follow_the_snapshot(
    served: tuple[BrainMetrics, MetricsServer, list[bool]],
) -> None:
    metrics, server, _ = served
    metrics.set_nodes(
        {
            "n1": NodeSample(reboot_required=True, phase="Draining"),
            "n2": NodeSample(reboot_required=True),
            "n3": NodeSample(reboot_required=False),
        }
    )
    metrics.set_windows(
        {
            "weekend": WindowSample(
                open=True, nodes_in_maintenance=1, blocked_reasons={"PrometheusAlerts"}
            ),
            "nights": WindowSample(open=False),
        }
    )
    samples = scrape(server)
    assert names(samples, "kured_reboot_required") == {
        (("node", "n1"),): 1.0,
        (("node", "n2"),): 1.0,
        (("node", "n3"),): 0.0,
    }
    assert names(samples, "pitstop_node_reboot_required") == names(samples, "kured_reboot_required")
    assert names(samples, "pitstop_node_phase") == {(("node", "n1"), ("phase", "Draining")): 1.0}
    assert names(samples, "pitstop_window_open") == {
        (("window", "weekend"),): 1.0,
        (("window", "nights"),): 0.0,
    }
    assert names(samples, "pitstop_nodes_in_maintenance")[(("window", "weekend"),)] == 1.0
    assert names(samples, "pitstop_window_blocked") == {
        (("reason", "PrometheusAlerts"), ("window", "weekend")): 1.0
    }

    # n1 moves on, n3 is deleted, the window unblocks and "nights" is deleted.
    metrics.set_nodes(
        {
            "n1": NodeSample(reboot_required=True, phase="Rebooting"),
            "n2": NodeSample(reboot_required=True),
        }
    )
    metrics.set_windows({"weekend": WindowSample(open=True, nodes_in_maintenance=1)})
    samples = scrape(server)
    assert names(samples, "pitstop_node_phase") == {(("node", "n1"), ("phase", "Rebooting")): 1.0}
    assert (("node", "n3"),) not in names(samples, "kured_reboot_required")
    assert names(samples, "pitstop_window_blocked") == {}
    assert list(names(samples, "pitstop_window_open")) == [(("window", "weekend"),)]


def test_counters_and_histogram_move(
    served: tuple[BrainMetrics, MetricsServer, list[bool]],
) -> None:
    metrics, server, _ = served
    before = scrape(server)
    assert before[("pitstop_lock_conflicts_total", ())] == 0
    metrics.count_reboot("weekend", RebootResult.SUCCEEDED)
    metrics.count_reboot("weekend", RebootResult.SUCCEEDED)
    metrics.count_reboot("weekend", RebootResult.FAILED)
    metrics.lock_conflicts.inc()
    metrics.api_errors.inc(3)
    metrics.count_notification_failure(FailureKind.QUEUE_FULL)
    metrics.observe_phase("Draining", 42)
    metrics.observe_phase("Rebooting", 4000)
    samples = scrape(server)
    reboots = names(samples, "pitstop_reboots_total")
    assert reboots[(("result", "succeeded"), ("window", "weekend"))] == 2
    assert reboots[(("result", "failed"), ("window", "weekend"))] == 1
    assert samples[("pitstop_lock_conflicts_total", ())] == 1
    assert samples[("pitstop_api_errors_total", ())] == 3
    assert samples[("pitstop_notifications_failed_total", ())] == 1
    buckets = names(samples, "pitstop_phase_duration_seconds_bucket")
    assert buckets[(("le", "30.0"), ("phase", "Draining"))] == 0
    assert buckets[(("le", "60.0"), ("phase", "Draining"))] == 1
    assert buckets[(("le", "3600.0"), ("phase", "Rebooting"))] == 0
    assert buckets[(("le", "+Inf"), ("phase", "Rebooting"))] == 1
    assert samples[("pitstop_phase_duration_seconds_sum", (("phase", "Draining"),))] == 42

    # A deleted window also loses its reboot counts.
    metrics.set_windows({})
    assert names(scrape(server), "pitstop_reboots_total") == {}


def test_healthz_follows_the_health_check(
    served: tuple[BrainMetrics, MetricsServer, list[bool]],
) -> None:
    _, server, health = served
    assert get(server, "/healthz") == (200, "ok\n")
    health[0] = False
    assert get(server, "/healthz")[0] == 503
    assert get(server, "/nothing")[0] == 404


def test_registries_are_separate() -> None:
    first, second = BrainMetrics(), BrainMetrics()
    first.api_errors.inc()
    assert b"pitstop_api_errors_total 1.0" in first.render()
    assert b"pitstop_api_errors_total 0.0" in second.render()


def test_build_info_names_the_version_and_python(
    served: tuple[BrainMetrics, MetricsServer, list[bool]],
) -> None:
    _, server, _ = served
    labels = (("python", platform.python_version()), ("version", version()))
    assert names(scrape(server), "pitstop_build_info") == {labels: 1.0}
