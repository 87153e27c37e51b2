"""The detector's health and metrics: shared status, Prometheus text, and a tiny HTTP server.

The exposition is written by hand: prometheus-client would add ~6 MiB of resident memory for
three numbers. The output follows the Prometheus text format 0.0.4 (tests parse it with
prometheus-client's own parser).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

from pitstop.version import python_version, version

LOG = logging.getLogger("pitstop.detector.metrics")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Snapshot:
    reboot_required: bool | None
    last_report_timestamp: float
    api_errors_total: int
    unreported_since: float | None


class Status:
    """What the reconciler last did, read by /metrics and /healthz (thread-safe)."""

    def __init__(self, stale_after_seconds: float) -> None:
        self.stale_after_seconds = stale_after_seconds
        self._lock = threading.Lock()
        self._reboot_required: bool | None = None
        self._last_report_timestamp = 0.0
        self._api_errors_total = 0
        # Monotonic time since which the API is known not to hold (or not confirmed to hold)
        # the detector's state; None while it does. Unconfirmed from the start.
        self._unreported_since: float | None = time.monotonic()

    def set_reboot_required(self, required: bool) -> None:
        with self._lock:
            self._reboot_required = required

    def reported(self, wall_time: float | None = None) -> None:
        """The API holds the detector's state (its PATCH succeeded or a read matched)."""
        with self._lock:
            self._last_report_timestamp = time.time() if wall_time is None else wall_time
            self._unreported_since = None

    def confirmed(self) -> None:
        """The API still matches (no PATCH was needed)."""
        with self._lock:
            if self._last_report_timestamp == 0.0:
                self._last_report_timestamp = time.time()
            self._unreported_since = None

    def diverged(self) -> None:
        """The API does not hold the detector's state (yet)."""
        with self._lock:
            if self._unreported_since is None:
                self._unreported_since = time.monotonic()

    def api_error(self) -> None:
        with self._lock:
            self._api_errors_total += 1

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                self._reboot_required,
                self._last_report_timestamp,
                self._api_errors_total,
                self._unreported_since,
            )

    def stale_seconds(self, now: float | None = None) -> float:
        """How long the report has been known stale (0 when it is not)."""
        since = self.snapshot().unreported_since
        if since is None:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - since)

    def healthy(self, now: float | None = None) -> bool:
        return self.stale_seconds(now) <= self.stale_after_seconds


def _build_info() -> str:
    """`pitstop_build_info`, the same series as the brain's (the values need no escaping)."""
    return (
        "# HELP pitstop_build_info Always 1; the labels say which Pitstop version and Python run.\n"
        "# TYPE pitstop_build_info gauge\n"
        f'pitstop_build_info{{version="{version()}",python="{python_version()}"}} 1\n'
    )


def exposition(status: Status) -> str:
    """The detector's metrics in the Prometheus text format."""
    snapshot = status.snapshot()
    required = 1 if snapshot.reboot_required else 0
    return BUILD_INFO + (
        "# HELP pitstop_detector_reboot_required 1 while the sentinel file exists, else 0.\n"
        "# TYPE pitstop_detector_reboot_required gauge\n"
        f"pitstop_detector_reboot_required {required}\n"
        "# HELP pitstop_detector_last_report_timestamp_seconds Unix time the API was last seen "
        "to hold the detector's state (0 if never).\n"
        "# TYPE pitstop_detector_last_report_timestamp_seconds gauge\n"
        f"pitstop_detector_last_report_timestamp_seconds {snapshot.last_report_timestamp!r}\n"
        "# HELP pitstop_detector_api_errors_total Failed Kubernetes API requests.\n"
        "# TYPE pitstop_detector_api_errors_total counter\n"
        f"pitstop_detector_api_errors_total {snapshot.api_errors_total}\n"
    )


BUILD_INFO = _build_info()


class _Handler(BaseHTTPRequestHandler):
    status: ClassVar[Status]
    timeout = 5  # a slow client must not hold the single-threaded server
    server_version = "pitstop-detector"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, exposition(self.status), CONTENT_TYPE)
        elif path in ("/healthz", "/livez", "/readyz"):
            stale = self.status.stale_seconds()
            if stale <= self.status.stale_after_seconds:
                self._send(200, "ok\n")
            else:
                self._send(503, f"stale: the report has not reached the API for {stale:.0f}s\n")
        else:
            self._send(404, "not found\n")

    def _send(self, code: int, text: str, content_type: str = "text/plain; charset=utf-8") -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        LOG.debug("%s " + format, self.address_string(), *args)


class _HTTPServer6(HTTPServer):
    address_family = socket.AF_INET6


def serve(status: Status, address: str, port: int) -> HTTPServer:
    """Start the metrics and health server in a daemon thread; raises OSError if the port is
    taken."""
    handler = type("Handler", (_Handler,), {"status": status})
    server = (_HTTPServer6 if ":" in address else HTTPServer)((address, port), handler)
    # serve_forever wakes every poll_interval only to look for shutdown(), which the detector
    # never calls (the thread ends with the process): a long interval keeps the idle CPU at 0.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 3600}, name="metrics", daemon=True
    )
    thread.start()
    LOG.info("metrics and health on %s:%s", address, server.server_address[1])
    return server
