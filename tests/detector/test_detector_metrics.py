"""Metrics exposition (parsed by prometheus-client's own parser) and the health endpoint."""

from __future__ import annotations

import http.client
import platform
import time

from prometheus_client.parser import text_string_to_metric_families

from detector.metrics import Status, exposition, serve
from pitstop.version import version


def parse(text: str) -> dict[str, tuple[str, float]]:
    values: dict[str, tuple[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = (family.type, sample.value)
    return values


def test_exposition_is_valid_prometheus_text() -> None:
    status = Status(stale_after_seconds=10)
    status.set_reboot_required(True)
    status.api_error()
    status.api_error()
    status.reported(wall_time=1700000000.5)
    values = parse(exposition(status))
    assert values == {
        "pitstop_build_info": ("gauge", 1.0),
        "pitstop_detector_reboot_required": ("gauge", 1.0),
        "pitstop_detector_last_report_timestamp_seconds": ("gauge", 1700000000.5),
        "pitstop_detector_api_errors_total": ("counter", 2.0),
    }


def test_http_metrics_and_healthz() -> None:
    status = Status(stale_after_seconds=0.2)
    server = serve(status, "127.0.0.1", 0)
    port = server.server_address[1]
    try:

        def get(path: str) -> tuple[int, str, str]:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read().decode()
            connection.close()
            return response.status, response.getheader("Content-Type") or "", body

        code, content_type, body = get("/metrics")
        assert code == 200 and content_type.startswith("text/plain; version=0.0.4")
        assert parse(body)["pitstop_detector_reboot_required"] == ("gauge", 0.0)
        status.confirmed()
        assert get("/healthz")[0] == 200
        status.diverged()
        time.sleep(0.3)
        code, _, body = get("/healthz")
        assert code == 503 and "stale" in body
        status.reported()
        assert get("/healthz")[0] == 200
        assert get("/nope")[0] == 404
    finally:
        server.server_close()


def test_build_info_names_the_version_and_python() -> None:
    families = {
        family.name: family
        for family in text_string_to_metric_families(exposition(Status(stale_after_seconds=10)))
    }
    (sample,) = families["pitstop_build_info"].samples
    assert sample.labels == {"version": version(), "python": platform.python_version()}
    assert sample.value == 1.0
