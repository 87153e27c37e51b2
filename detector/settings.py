"""The detector's settings: read from flags and environment variables, validated by pydantic.

pydantic costs ~18 MiB of resident memory once a model is built, which alone would break the
detector's 30 MiB budget. So validation happens in a forked child that imports pydantic, checks
the raw strings and sends back plain JSON through a pipe, then exits; the long-running parent
never imports pydantic and keeps only the frozen dataclass below.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from pitstop.version import version_line


@dataclass(frozen=True)
class Settings:
    """Validated settings (see `detector.settings_model` for the rules)."""

    node_name: str
    sentinel_path: str
    poll_interval_seconds: float
    metrics_port: int
    metrics_address: str
    kured_compatibility: bool
    stale_after_seconds: float
    backoff_initial_seconds: float
    backoff_max_seconds: float
    api_timeout_seconds: float
    kubeconfig: str | None
    service_account_dir: str
    in_cluster_host: str | None
    in_cluster_port: int
    log_level: str
    log_format: str


@dataclass(frozen=True)
class SettingSource:
    """Where one setting comes from and what form it must take (for help and error text)."""

    field: str
    flag: str | None
    environment: str
    expected: str


SOURCES: tuple[SettingSource, ...] = (
    SettingSource(
        "node_name",
        "--node-name",
        "NODE_NAME",
        "the Node's name (RFC 1123 DNS subdomain), usually from the downward API",
    ),
    SettingSource(
        "sentinel_path",
        "--sentinel-path",
        "PITSTOP_SENTINEL_PATH",
        "an absolute file path (default /kured/reboot-required)",
    ),
    SettingSource(
        "poll_interval_seconds",
        "--poll-interval-seconds",
        "PITSTOP_POLL_INTERVAL_SECONDS",
        "seconds between safety-net checks of the file, from 1 to 3600 (default 60)",
    ),
    SettingSource(
        "metrics_port",
        "--metrics-port",
        "PITSTOP_METRICS_PORT",
        "a TCP port from 1 to 65535, or 0 to switch metrics off (default 8080)",
    ),
    SettingSource(
        "metrics_address",
        "--metrics-address",
        "PITSTOP_METRICS_ADDRESS",
        "an IPv4 or IPv6 address to listen on (default 0.0.0.0)",
    ),
    SettingSource(
        "kured_compatibility",
        "--kured-compatibility",
        "PITSTOP_KURED_COMPATIBILITY",
        "true or false (default false)",
    ),
    SettingSource(
        "stale_after_seconds",
        "--stale-after-seconds",
        "PITSTOP_STALE_AFTER_SECONDS",
        "seconds a failing report may last before /healthz fails, from 1 to 86400 (default 300)",
    ),
    SettingSource(
        "backoff_initial_seconds",
        "--backoff-initial-seconds",
        "PITSTOP_BACKOFF_INITIAL_SECONDS",
        "first retry delay in seconds, from 0.01 to 60 (default 0.5)",
    ),
    SettingSource(
        "backoff_max_seconds",
        "--backoff-max-seconds",
        "PITSTOP_BACKOFF_MAX_SECONDS",
        "longest retry delay in seconds, from 0.1 to 3600 and not below the first (default 30)",
    ),
    SettingSource(
        "api_timeout_seconds",
        "--api-timeout-seconds",
        "PITSTOP_API_TIMEOUT_SECONDS",
        "seconds one API request may take, from 0.5 to 300 (default 10)",
    ),
    SettingSource(
        "kubeconfig",
        "--kubeconfig",
        "KUBECONFIG",
        "a kubeconfig file path; unset inside a cluster (the service account is used)",
    ),
    SettingSource(
        "service_account_dir",
        "--service-account-dir",
        "PITSTOP_SERVICE_ACCOUNT_DIR",
        "an absolute directory holding token and ca.crt "
        "(default /var/run/secrets/kubernetes.io/serviceaccount)",
    ),
    SettingSource(
        "in_cluster_host",
        None,
        "KUBERNETES_SERVICE_HOST",
        "the API server's address, set by Kubernetes inside a pod",
    ),
    SettingSource(
        "in_cluster_port",
        None,
        "KUBERNETES_SERVICE_PORT",
        "the API server's port from 1 to 65535, set by Kubernetes inside a pod",
    ),
    SettingSource(
        "log_level",
        "--log-level",
        "PITSTOP_LOG_LEVEL",
        "one of debug, info, warning, error, in any case (default info)",
    ),
    SettingSource(
        "log_format",
        "--log-format",
        "PITSTOP_LOG_FORMAT",
        "text or json, one JSON object per line (default text)",
    ),
)
_BY_FIELD = {source.field: source for source in SOURCES}
EXIT_BAD_SETTINGS = 2


class SettingsError(Exception):
    """A setting is missing or malformed; the message names it and the expected form."""


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pitstop-detector",
        description="Report this node's reboot-required sentinel file on its Node object.",
        epilog="Every flag can also be set by the environment variable shown; a flag wins.",
    )
    parser.add_argument("--version", action="version", version=version_line("pitstop-detector"))
    for source in SOURCES:
        if source.flag is None:
            continue
        parser.add_argument(
            source.flag,
            dest=source.field,
            default=None,
            metavar="VALUE",
            help=f"{source.expected} [env {source.environment}]",
        )
    return parser


def collect_raw(argv: Sequence[str], environment: Mapping[str, str]) -> dict[str, str]:
    """Raw strings from flags (first) and environment variables; unset settings are left out.

    Argument errors (an unknown flag, a flag without its value) exit 2 through argparse.
    """
    parsed = vars(_argument_parser().parse_args(list(argv)))
    raw: dict[str, str] = {}
    for source in SOURCES:
        value = parsed.get(source.field)
        if value is None:
            value = environment.get(source.environment)
        if value is not None:
            raw[source.field] = value
    return raw


def describe_errors(errors: Sequence[Mapping[str, Any]], raw: Mapping[str, str]) -> str:
    """Turn pydantic's error list into lines naming the flag, the variable and the form."""
    lines: list[str] = []
    for error in errors:
        location = error.get("loc") or ()
        field = str(location[0]) if location else ""
        source = _BY_FIELD.get(field)
        if source is None:
            message = str(error.get("msg", "invalid"))
            if "backoff" in message:
                names = [_BY_FIELD["backoff_max_seconds"], _BY_FIELD["backoff_initial_seconds"]]
            elif "no API server" in message:
                names = [_BY_FIELD["kubeconfig"], _BY_FIELD["in_cluster_host"]]
            else:
                names = []
            named = " or ".join(_name(source) for source in names) or "settings"
            expected = "; ".join(source.expected for source in names)
            lines.append(
                f"invalid {named}: {message.removeprefix('Value error, ')}"
                + (f"; expected {expected}" if expected else "")
            )
            continue
        if error.get("type") == "missing":
            lines.append(f"missing setting {_name(source)}: expected {source.expected}")
        else:
            given = raw.get(field)
            lines.append(
                f"invalid setting {_name(source)}: got {given!r}; expected {source.expected}"
            )
    return "\n".join(lines)


def _name(source: SettingSource) -> str:
    if source.flag is None:
        return f"environment variable {source.environment}"
    return f"{source.flag} (environment variable {source.environment})"


def validate_in_process(raw: Mapping[str, str]) -> Settings:
    """Validate with pydantic in this process (tests; the detector uses `load`)."""
    from detector import settings_model

    try:
        values = settings_model.validate(dict(raw))
    except settings_model.ValidationError as error:
        raise SettingsError(describe_errors(error.errors(), raw)) from None
    return from_json(values)


def from_json(values: Mapping[str, Any]) -> Settings:
    """Build Settings from the validated values; the keys must match the fields exactly."""
    names = {field.name for field in fields(Settings)}
    if set(values) != names:
        raise SettingsError(f"internal: validated keys {sorted(values)} != {sorted(names)}")
    return Settings(**values)


def validate_isolated(raw: Mapping[str, str]) -> Settings:
    """Validate in a forked child so pydantic never enters this process's memory."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child, reported through the pipe
        os.close(read_end)
        try:
            result: dict[str, Any] = {"settings": _asdict(validate_in_process(raw))}
        except SettingsError as error:
            result = {"error": str(error)}
        except BaseException as error:
            result = {"error": f"internal error while validating settings: {error!r}"}
        with os.fdopen(write_end, "w") as pipe:
            json.dump(result, pipe)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        payload = pipe.read()
    os.waitpid(child, 0)
    try:
        result = json.loads(payload)
    except ValueError:
        raise SettingsError("internal error: the settings validator died") from None
    if "error" in result:
        raise SettingsError(result["error"])
    return from_json(result["settings"])


def _asdict(settings: Settings) -> dict[str, Any]:
    return {field.name: getattr(settings, field.name) for field in fields(Settings)}


def load(
    argv: Sequence[str] | None = None, environment: Mapping[str, str] | None = None
) -> Settings:
    """Flags and environment -> validated Settings, or SettingsError."""
    raw = collect_raw(
        sys.argv[1:] if argv is None else argv, os.environ if environment is None else environment
    )
    return validate_isolated(raw)
