"""The brain's Prometheus metrics, in their own registry, and the HTTP server that serves them.

Counters and the histogram are plain prometheus-client objects the flow increments. The
per-node and per-window gauges are not: the flow hands over a whole snapshot on each pass
(`set_nodes`, `set_windows`) and a scrape reads the latest snapshot as one piece, so a node or
window that disappears loses its series at once and a scrape never sees half an update.

`kured_reboot_required{node}` has kured's meaning (1 when the node needs a reboot), so existing
dashboards and alerts keep working after a migration.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, exposition
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from brain.core.api import ApiRequest
from pitstop.version import python_version, version

# From a quick drain to a slow node return: seconds up to an hour (longer lands in +Inf).
PHASE_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600)
# Hand-off is event-driven (the write that frees a slot admits the next node): well under 1 s.
HANDOFF_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# An API request: milliseconds when all is well, seconds when the API server is loaded.
API_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class RebootResult:
    """Values of `pitstop_reboots_total{result}`."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"  # drain aborted at its timeout: the node goes back to Pending


@dataclass(frozen=True)
class NodeSample:
    """What the metrics show of one node the brain knows about."""

    reboot_required: bool
    phase: str | None = None  # None: not in the brain's care (no pitstop_node_phase series)


@dataclass(frozen=True)
class WindowSample:
    """What the metrics show of one window."""

    open: bool
    nodes_in_maintenance: int = 0
    blocked_reasons: Set[str] = field(default_factory=frozenset)


class _SnapshotCollector(Collector):
    """Yields the gauges of the latest node and window snapshots (swapped in whole)."""

    def __init__(self) -> None:
        self.nodes: Mapping[str, NodeSample] = {}
        self.windows: Mapping[str, WindowSample] = {}

    def collect(self) -> Iterable[Metric]:
        nodes, windows = self.nodes, self.windows  # one consistent pair per scrape
        kured = GaugeMetricFamily(
            "kured_reboot_required",
            "OS requires reboot due to software updates (kured's metric, kept by Pitstop).",
            labels=["node"],
        )
        required = GaugeMetricFamily(
            "pitstop_node_reboot_required",
            "1 when the node is flagged for a reboot.",
            labels=["node"],
        )
        phase = GaugeMetricFamily(
            "pitstop_node_phase",
            "1 for the phase a node in the brain's care is in (one series per node).",
            labels=["node", "phase"],
        )
        for name, sample in sorted(nodes.items()):
            kured.add_metric([name], float(sample.reboot_required))
            required.add_metric([name], float(sample.reboot_required))
            if sample.phase is not None:
                phase.add_metric([name, sample.phase], 1.0)
        in_maintenance = GaugeMetricFamily(
            "pitstop_nodes_in_maintenance",
            "Nodes of the window holding a slot (draining, rebooting, returning, checked, failed).",
            labels=["window"],
        )
        window_open = GaugeMetricFamily(
            "pitstop_window_open", "1 when the window's schedule is open.", labels=["window"]
        )
        blocked = GaugeMetricFamily(
            "pitstop_window_blocked",
            "1 for each reason a window is blocked from starting nodes.",
            labels=["window", "reason"],
        )
        for name, window in sorted(windows.items()):
            in_maintenance.add_metric([name], float(window.nodes_in_maintenance))
            window_open.add_metric([name], float(window.open))
            for reason in sorted(window.blocked_reasons):
                blocked.add_metric([name, reason], 1.0)
        return [kured, required, phase, in_maintenance, window_open, blocked]


class BrainMetrics:
    """Every metric of the brain, registered in `self.registry` (not the global registry)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._snapshot = _SnapshotCollector()
        self.registry.register(self._snapshot)
        self.reboots = Counter(
            "pitstop_reboots_total",
            "Node reboots finished, by window and result (succeeded, failed, aborted).",
            ["window", "result"],
            registry=self.registry,
        )
        self.phase_duration = Histogram(
            "pitstop_phase_duration_seconds",
            "Time nodes spent in each phase (Draining, Rebooting, WaitingForNode, HealthCheck).",
            ["phase"],
            buckets=PHASE_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.handoff = Histogram(
            "pitstop_handoff_seconds",
            "Time from a node freeing its slot to the next node of the same window starting,"
            " when nodes were waiting (the rollout's dead time between nodes).",
            ["window"],
            buckets=HANDOFF_BUCKETS,
            registry=self.registry,
        )
        self.lock_conflicts = Counter(
            "pitstop_lock_conflicts",
            "Writes to the lock that lost a race (409 Conflict) and were decided again.",
            registry=self.registry,
        )
        # Every request of the brain's client (brain/kube.py ApiRequests): drains, Jobs, watches.
        self.api_requests = Counter(
            "pitstop_api_requests",
            "Kubernetes API requests of the brain, by verb, resource and HTTP code"
            " (<error>: no answer); a watch counts once, when it opens.",
            ["verb", "resource", "code"],
            registry=self.registry,
        )
        self.api_request_duration = Histogram(
            "pitstop_api_request_duration_seconds",
            "Time from sending a Kubernetes API request to its response's headers.",
            ["verb", "resource"],
            buckets=API_REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.api_errors = Counter(
            "pitstop_api_errors",
            "Kubernetes API requests that failed: no answer, or an error the brain does not"
            " expect (not 404, 409, 410, nor an eviction's 429).",
            registry=self.registry,
        )
        self.notifications_failed = Counter(
            "pitstop_notifications_failed",
            "Notifications that could not be sent or were dropped (queue full).",
            registry=self.registry,
        )
        # A host clock off the API server's (the brain reasons in the server's time anyway).
        self.clock_skew = Gauge(
            "pitstop_clock_skew_seconds",
            "How far this brain's host clock is ahead of the API server's (negative: behind).",
            registry=self.registry,
        )
        # 1 while this brain's hold of the status writer Lease is valid (brain/status_writer.py):
        # the Lease is held on demand, so an idle brain lets it lapse and shows 0.
        self.status_writer = Gauge(
            "pitstop_status_writer",
            "1 while this brain holds the status writer Lease and may write window status.",
            registry=self.registry,
        )
        # Which build runs (a dashboard shows it, an alert finds brains and detectors that differ).
        Gauge(
            "pitstop_build_info",
            "Always 1; the labels say which Pitstop version and Python run.",
            ["version", "python"],
            registry=self.registry,
        ).labels(version=version(), python=python_version()).set(1)
        self._windows_seen: set[str] = set()
        self._lock = threading.Lock()

    def set_nodes(self, nodes: Mapping[str, NodeSample]) -> None:
        """Replace the per-node gauges: nodes not in `nodes` lose their series."""
        self._snapshot.nodes = dict(nodes)

    def set_windows(self, windows: Mapping[str, WindowSample]) -> None:
        """Replace the per-window gauges; a window that is gone also loses its reboot counts."""
        self._snapshot.windows = dict(windows)
        with self._lock:
            gone = self._windows_seen - set(windows)
            self._windows_seen = set(windows)
        for window in gone:
            for result in (RebootResult.SUCCEEDED, RebootResult.FAILED, RebootResult.ABORTED):
                with contextlib.suppress(KeyError):  # never counted for this window
                    self.reboots.remove(window, result)
            with contextlib.suppress(KeyError):
                self.handoff.remove(window)

    def count_reboot(self, window: str, result: str) -> None:
        with self._lock:
            self._windows_seen.add(window)
        self.reboots.labels(window=window, result=result).inc()

    def observe_phase(self, phase: str, seconds: float) -> None:
        self.phase_duration.labels(phase=phase).observe(seconds)

    def observe_handoff(self, window: str, seconds: float) -> None:
        with self._lock:
            self._windows_seen.add(window)
        self.handoff.labels(window=window).observe(seconds)

    def observe_api_request(self, request: ApiRequest) -> None:
        """Fits `ApiRequests(observe=...)`: count, time and, if it failed, count the error."""
        self.api_requests.labels(request.verb, request.resource, request.code).inc()
        self.api_request_duration.labels(request.verb, request.resource).observe(request.seconds)
        if request.failed:
            self.api_errors.inc()

    def count_notification_failure(self, *_: Any) -> None:
        """Fits `Notifier(on_failure=...)`: whatever the failure, one more in the counter."""
        self.notifications_failed.inc()

    def render(self) -> bytes:
        return exposition.generate_latest(self.registry)


HealthCheck = Callable[[], bool]


@dataclass
class MetricsServer:
    """The running server; `port` is the real one (useful with port 0), `stop()` ends it."""

    httpd: ThreadingHTTPServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(
    port: int,
    metrics: BrainMetrics,
    health_check: HealthCheck | None = None,
    host: str = "0.0.0.0",
) -> MetricsServer:
    """Serve /metrics and /healthz (200 when `health_check()` is true, else 503) in a thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, metrics.render(), exposition.CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/livez"):
                healthy = _healthy(health_check)
                self._answer(200 if healthy else 503, b"ok\n" if healthy else b"unhealthy\n")
            else:
                self._answer(404, b"not found: try /metrics or /healthz\n")

        def _answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes every few seconds would drown the brain's log

    httpd = ThreadingHTTPServer((host, port), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(
        target=httpd.serve_forever, name="pitstop-metrics", kwargs={"poll_interval": 0.2}
    )
    thread.daemon = True
    thread.start()
    return MetricsServer(httpd=httpd, thread=thread)


def _healthy(health_check: HealthCheck | None) -> bool:
    if health_check is None:
        return True
    try:
        return bool(health_check())
    except Exception:
        return False


__all__ = [
    "API_REQUEST_BUCKETS",
    "PHASE_DURATION_BUCKETS",
    "BrainMetrics",
    "MetricsServer",
    "NodeSample",
    "RebootResult",
    "WindowSample",
    "start_metrics_server",
]
