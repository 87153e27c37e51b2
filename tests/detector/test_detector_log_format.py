"""The detector's `--log-format json` and its log level in any case."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detector.settings import SettingsError, collect_raw, validate_in_process
from localcluster.processes import free_port

REPOSITORY = Path(__file__).resolve().parents[2]
BASE = {"NODE_NAME": "node-a", "KUBECONFIG": "/tmp/kubeconfig"}


@pytest.mark.parametrize("given", ["DEBUG", "Info", "warning"])
def test_log_level_in_any_case(given: str) -> None:
    settings = validate_in_process(collect_raw([], {**BASE, "PITSTOP_LOG_LEVEL": given}))
    assert settings.log_level == given.lower()


def test_log_format() -> None:
    assert validate_in_process(collect_raw([], BASE)).log_format == "text"
    raw = collect_raw(["--log-format", "JSON"], BASE)
    assert validate_in_process(raw).log_format == "json"
    with pytest.raises(SettingsError, match="--log-format"):
        validate_in_process(collect_raw(["--log-format", "yaml"], BASE))


def test_json_lines_from_the_running_detector(tmp_path: Path) -> None:
    """Its log lines (here: the metrics server's) are JSON objects naming the node."""
    from tests.pitstopctl.test_cli_errors import unreachable_kubeconfig

    result = subprocess.run(
        [sys.executable, "-m", "detector", "--log-format", "json"],
        env={
            **{key: value for key, value in os.environ.items() if key != "KUBECONFIG"},
            "NODE_NAME": "node-a",
            "KUBECONFIG": str(unreachable_kubeconfig(tmp_path)),
            "PITSTOP_METRICS_ADDRESS": "127.0.0.1",
            "PITSTOP_METRICS_PORT": str(free_port()),
            "PITSTOP_LOG_LEVEL": "DEBUG",
            "PITSTOP_SENTINEL_PATH": str(tmp_path / "reboot-required"),
        },
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    logged = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    problem = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(problem) == 1 and problem[0].startswith("pitstop-detector: cannot reach")
    assert logged, result.stderr
    for line in logged:
        assert {"time", "level", "logger", "message"} <= line.keys()
        assert line["node"] == "node-a"
