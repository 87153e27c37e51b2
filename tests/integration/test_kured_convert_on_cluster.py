"""convert-kured's output is accepted by the real API server with the NodesMaintenanceWindow CRD."""

from __future__ import annotations

import pytest

from localcluster.controlplane import ControlPlane
from pitstopctl.kured_convert import convert, parse_flag_list, read_source
from tests.pitstopctl.test_kured_convert import CHART_DEFAULTS, DAEMONSET

FLAG_SETS = {
    "weeknights": [
        "--reboot-days=mo,tu,we,th,fr",
        "--start-time=22:00",
        "--end-time=23:59:59",
        "--time-zone=Europe/Berlin",
        "--concurrency=3",
        "--prometheus-url=http://prometheus.monitoring.svc:9090",
        "--alert-filter-regexp=^(Watchdog|RebootRequired)$",
        "--alert-firing-only",
        "--notify-url=slack://hook:T0001-B0002-XXXXXXXXXXXXXXXXXXXXXXXX@webhook?channel=ops",
        "--force-reboot",
        "--drain-timeout=1h30m",
        "--lock-release-delay=90s",
    ],
    "fridays": [
        "--reboot-days=fr",
        "--start-time=11pm",
        "--end-time=3am",
        "--drain-grace-period=30",
        "--drain-pod-selector=app!=critical",
        "--blocking-pod-selector=job in (backup,restore),!skip",
        "--reboot-method=signal",
        "--notify-url=smtp://u:p@smtp.example.com:587/?from=a@example.com&to=b@example.com",
    ],
    "never": ["--start-time=3:00", "--end-time=3:00", "--period=10m", "--lock-ttl=30m"],
}


def apply_dry_run(cluster: ControlPlane, manifests: str) -> str:
    result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifests, check=False)
    assert result.returncode == 0, f"{result.stderr}\n---\n{manifests}"
    return result.stdout


@pytest.mark.parametrize("name", sorted(FLAG_SETS))
def test_flag_sets_apply(window_crd: ControlPlane, namespace: str, name: str) -> None:
    result = convert(parse_flag_list(FLAG_SETS[name]), name=f"kured-{name}", namespace=namespace)
    output = apply_dry_run(window_crd, result.to_yaml())
    assert f"nodesmaintenancewindow.pitstop.dev/kured-{name} created (server dry run)" in output
    if result.secret is not None:
        assert f"secret/kured-{name}-notify created (server dry run)" in output


@pytest.mark.parametrize("source_text", [CHART_DEFAULTS, DAEMONSET], ids=["chart", "daemonset"])
def test_chart_defaults_and_daemonset_apply(
    window_crd: ControlPlane, namespace: str, source_text: str
) -> None:
    source = read_source(source_text)
    result = convert(source.flags, node_selector=source.node_selector, namespace=namespace)
    output = apply_dry_run(window_crd, result.to_yaml())
    assert "nodesmaintenancewindow.pitstop.dev/kured created (server dry run)" in output
