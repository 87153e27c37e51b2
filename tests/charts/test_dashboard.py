"""The Grafana dashboard and the alerts: every metric a panel queries is one the brain or the
detector exposes, the chart ships the dashboard ConfigMap (off by default), and the alert names
in the docs are the chart's. Also the log values of the chart."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from brain.core.api import ApiRequest
from brain.integrations.metrics import BrainMetrics, NodeSample, RebootResult, WindowSample
from detector.metrics import Status, exposition
from localcluster.binaries import resolve

REPOSITORY = Path(__file__).resolve().parents[2]
CHART = REPOSITORY / "charts" / "pitstop"
DASHBOARD = CHART / "dashboards" / "pitstop.json"
METRIC = re.compile(r"\b((?:pitstop|kured)_[a-z_]+)\b")


def exposed_metrics() -> set[str]:
    """Every sample name the brain's and the detector's /metrics serve, with data in them."""
    metrics = BrainMetrics()
    metrics.set_nodes({"n1": NodeSample(reboot_required=True, phase="Draining")})
    metrics.set_windows({"w": WindowSample(open=True, nodes_in_maintenance=1,
                                           blocked_reasons=frozenset({"Alert"}))})  # fmt: skip
    metrics.count_reboot("w", RebootResult.SUCCEEDED)
    metrics.observe_phase("drain", 3)
    metrics.observe_handoff("w", 0.2)
    metrics.observe_api_request(ApiRequest("create", "pods/eviction", "201", 0.01))
    status = Status(300)
    status.set_reboot_required(True)
    texts = [metrics.render().decode(), exposition(status)]
    return {
        sample.name
        for text in texts
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    queries += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return queries


def test_every_metric_the_dashboard_queries_is_exposed() -> None:
    exposed = exposed_metrics()
    named = {name for query in dashboard_queries() for name in METRIC.findall(query)}
    assert named, "the dashboard queries no Pitstop metric"
    assert not named - exposed, f"queried but not exposed: {sorted(named - exposed)}"


def test_the_dashboard_covers_what_an_operator_asks() -> None:
    titles = " | ".join(p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]).lower()
    for topic in ("rollout progress", "by phase", "reboot durations", "hand-off", "blocked",
                  "need a reboot"):  # fmt: skip
        assert topic in titles, topic


def chart_alerts() -> set[str]:
    template = (CHART / "templates" / "monitoring.yaml").read_text()
    return set(re.findall(r"- alert: (\w+)", template))


def test_alert_names_in_docs_are_the_charts() -> None:
    alerts = chart_alerts()
    assert alerts == {"PitstopNodeRebootFailed", "PitstopWindowBlocked", "PitstopBrainDown"}
    for document in ("README.md", "docs/install.md", "docs/integrations.md", "docs/operations.md"):
        text = (REPOSITORY / document).read_text()
        named = set(re.findall(r"\b(Pitstop[A-Z][A-Za-z]+)\b", text)) | set(
            re.findall(r"alert: (\w+)", text)
        )
        assert named <= alerts, f"{document} names alerts the chart lacks: {named - alerts}"
    integrations = (REPOSITORY / "docs" / "integrations.md").read_text()
    assert alerts <= set(re.findall(r"alert: (\w+)", integrations))
    assert "draft" not in integrations.lower()


@pytest.fixture(scope="module")
def helm() -> Path:
    return resolve(("helm",))["helm"]


def render(helm: Path, *values: str) -> list[dict[str, Any]]:
    arguments = [str(helm), "template", "pitstop", str(CHART), "-n", "pitstop-system"]
    for value in values:
        arguments += ["--set", value]
    result = subprocess.run(arguments, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def test_chart_ships_the_dashboard_when_asked(helm: Path) -> None:
    assert not [d for d in render(helm) if d["metadata"]["name"] == "pitstop-dashboard"]
    documents = render(helm, "grafana.dashboard.enabled=true")
    (config_map,) = [d for d in documents if d["metadata"]["name"] == "pitstop-dashboard"]
    assert config_map["kind"] == "ConfigMap"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["pitstop.json"]) == json.loads(DASHBOARD.read_text())
    elsewhere = render(helm, "grafana.dashboard.enabled=true",
                       "grafana.dashboard.namespace=monitoring")  # fmt: skip
    (moved,) = [d for d in elsewhere if d["metadata"]["name"] == "pitstop-dashboard"]
    assert moved["metadata"]["namespace"] == "monitoring"


def environment(documents: list[dict[str, Any]], kind: str) -> dict[str, str]:
    (workload,) = [d for d in documents if d["kind"] == kind]
    container = workload["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item.get("value", "") for item in container["env"]}


def test_log_values_reach_both_programs(helm: Path) -> None:
    defaults = render(helm)
    assert environment(defaults, "Deployment")["PITSTOP_LOG_FORMAT"] == "text"
    assert environment(defaults, "DaemonSet")["PITSTOP_LOG_FORMAT"] == "text"
    documents = render(helm, "brain.logFormat=json", "brain.logLevel=debug",
                       "detector.logFormat=JSON", "detector.logLevel=Warning")  # fmt: skip
    brain, detector = environment(documents, "Deployment"), environment(documents, "DaemonSet")
    assert (brain["PITSTOP_LOG_FORMAT"], brain["PITSTOP_LOG_LEVEL"]) == ("json", "debug")
    assert (detector["PITSTOP_LOG_FORMAT"], detector["PITSTOP_LOG_LEVEL"]) == ("JSON", "Warning")
    arguments = [str(helm), "template", "pitstop", str(CHART), "--set", "brain.logFormat=logfmt"]
    rejected = subprocess.run(arguments, capture_output=True, text=True, timeout=120)
    assert rejected.returncode != 0 and "logFormat" in rejected.stderr
