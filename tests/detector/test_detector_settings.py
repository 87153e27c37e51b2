"""Settings: flags and environment, validation errors that name the setting and its form."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from detector.settings import (
    SOURCES,
    Settings,
    SettingsError,
    collect_raw,
    validate_in_process,
    validate_isolated,
)
from detector.settings_model import DetectorSettingsModel

BASE = {"NODE_NAME": "node-a", "KUBECONFIG": "/tmp/kubeconfig"}


def load(argv: list[str], environment: dict[str, str]) -> Settings:
    return validate_in_process(collect_raw(argv, environment))


def test_defaults() -> None:
    settings = load([], BASE)
    assert settings.node_name == "node-a"
    assert settings.sentinel_path == "/kured/reboot-required"
    assert settings.metrics_port == 8080
    assert settings.poll_interval_seconds == 60.0
    assert settings.kured_compatibility is False
    assert settings.kubeconfig == "/tmp/kubeconfig"


def test_flag_wins_over_environment() -> None:
    environment = {**BASE, "PITSTOP_METRICS_PORT": "9000"}
    assert load(["--metrics-port", "9100"], environment).metrics_port == 9100
    assert load([], environment).metrics_port == 9000


@pytest.mark.parametrize("text, expected", [("true", True), ("YES", True), ("0", False)])
def test_booleans(text: str, expected: bool) -> None:
    environment = {**BASE, "PITSTOP_KURED_COMPATIBILITY": text}
    assert load([], environment).kured_compatibility is expected


@pytest.mark.parametrize(
    "argv, environment, named, form",
    [
        ([], {"KUBECONFIG": "/k"}, "--node-name (environment variable NODE_NAME)", "RFC 1123"),
        (["--node-name", "Bad_Name"], {"KUBECONFIG": "/k"}, "--node-name", "RFC 1123"),
        (["--poll-interval-seconds", "abc"], BASE, "PITSTOP_POLL_INTERVAL_SECONDS", "1 to 3600"),
        (["--poll-interval-seconds", "0"], BASE, "--poll-interval-seconds", "1 to 3600"),
        ([], {**BASE, "PITSTOP_METRICS_PORT": "70000"}, "PITSTOP_METRICS_PORT", "65535"),
        (["--metrics-address", "localhost"], BASE, "--metrics-address", "IPv4 or IPv6"),
        (["--sentinel-path", "relative/file"], BASE, "--sentinel-path", "absolute file path"),
        ([], {**BASE, "PITSTOP_KURED_COMPATIBILITY": "maybe"}, "--kured-compatibility", "true"),
        (["--log-level", "loud"], BASE, "--log-level", "debug, info"),
        (["--stale-after-seconds", "nan"], BASE, "--stale-after-seconds", "86400"),
        (
            ["--backoff-initial-seconds", "5", "--backoff-max-seconds", "1"],
            BASE,
            "--backoff-max-seconds",
            "not below the first",
        ),
        ([], {"NODE_NAME": "node-a"}, "KUBERNETES_SERVICE_HOST", "kubeconfig file path"),
    ],
)
def test_bad_setting_is_named_with_its_form(
    argv: list[str], environment: dict[str, str], named: str, form: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load(argv, environment)
    assert named in str(caught.value)
    assert form in str(caught.value)


def test_in_cluster_needs_no_kubeconfig() -> None:
    settings = load([], {"NODE_NAME": "n", "KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert settings.kubeconfig is None
    assert settings.in_cluster_host == "10.0.0.1"
    assert settings.in_cluster_port == 443


def test_unknown_flag_exits_2() -> None:
    with pytest.raises(SystemExit) as caught:
        collect_raw(["--no-such-flag", "x"], BASE)
    assert caught.value.code == 2


def test_model_and_dataclass_have_the_same_fields() -> None:
    """The run-time dataclass is built from the model's output: a drift would fail at start."""
    model_fields = set(DetectorSettingsModel.model_fields)
    assert model_fields == {field.name for field in dataclasses.fields(Settings)}
    assert model_fields == {source.field for source in SOURCES}


def test_isolated_validation_gives_the_same_result_without_pydantic_here() -> None:
    raw = collect_raw(["--metrics-port", "9999"], BASE)
    assert validate_isolated(raw) == validate_in_process(raw)
    with pytest.raises(SettingsError, match="--metrics-port"):
        validate_isolated({**raw, "metrics_port": "x"})


def test_isolated_validation_keeps_pydantic_out_of_the_parent() -> None:
    """Run in a fresh interpreter: the parent must not import pydantic at all."""
    import subprocess

    code = (
        "import sys; from detector.settings import load;"
        "s = load([], {'NODE_NAME': 'n', 'KUBECONFIG': '/k'});"
        "print(s.node_name, any(m.startswith('pydantic') for m in sys.modules))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.split() == ["n", "False"]
