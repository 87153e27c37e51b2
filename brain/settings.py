"""The brain's own settings (not per window): from environment variables and flags, validated.

A bad value stops the brain at start with a message naming the setting and the expected form.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from brain.core.api import DEFAULT_JOB_NAMESPACE, DEFAULT_LOCK_NAME, DEFAULT_NAMESPACE
from pitstop.version import version_line

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class BrainSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = Field(default=DEFAULT_NAMESPACE, pattern=DNS_LABEL, max_length=63)
    lock_name: str = Field(default=DEFAULT_LOCK_NAME, pattern=DNS_LABEL, max_length=253)
    job_namespace: str = Field(default=DEFAULT_JOB_NAMESPACE, pattern=DNS_LABEL, max_length=63)
    job_image: str = Field(default="ghcr.io/pitstop-dev/pitstop:0.1.0", min_length=1)
    host_agent_directory: str = Field(default="/var/lib/pitstop/approvals", pattern=r"^/")
    metrics_port: int = Field(default=8080, ge=0, le=65535)
    resync_seconds: float = Field(default=30.0, gt=0, le=3600)
    kured_compatibility: bool = False
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    log_format: str = Field(default="text", pattern=r"^(text|json)$")
    # The brain's own pod (downward API), never evicted by its drains: on a node that reboots
    # with the brain on it (a single-node cluster), an evicted brain could not come back to
    # uncordon; kept, it restarts with the node and resumes from the lock.
    pod_name: str = Field(default="", max_length=253)
    # A host clock further than this off the API server's is told (log, metric, Event once);
    # deadlines are judged by the API server's time whatever it is.
    clock_skew_warning_seconds: float = Field(default=30.0, gt=0, le=86400)
    # The cluster's name for people: `$cluster` in notification templates (chart clusterName).
    cluster_name: str = Field(default="", max_length=253)

    # Levels and formats in any case (`info`, `INFO`), as the detector and the chart accept them.
    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


# setting name -> (environment variable, flag, expected form)
SOURCES: dict[str, tuple[str, str, str]] = {
    "namespace": ("PITSTOP_NAMESPACE", "--namespace", "a DNS label, e.g. pitstop-system"),
    "lock_name": ("PITSTOP_LOCK_NAME", "--lock-name", "a DNS name, e.g. pitstop-lock"),
    "job_namespace": ("PITSTOP_JOB_NAMESPACE", "--job-namespace", "a DNS label"),
    "job_image": ("PITSTOP_JOB_IMAGE", "--job-image", "an image reference"),
    "host_agent_directory": (
        "PITSTOP_HOST_AGENT_DIRECTORY",
        "--host-agent-directory",
        "an absolute host path",
    ),
    "metrics_port": ("PITSTOP_METRICS_PORT", "--metrics-port", "a port number 0-65535"),
    "resync_seconds": (
        "PITSTOP_RESYNC_SECONDS",
        "--resync-seconds",
        "seconds between safety-net passes, > 0",
    ),
    "kured_compatibility": (
        "PITSTOP_KURED_COMPATIBILITY",
        "--kured-compatibility",
        "true or false",
    ),
    "log_level": (
        "PITSTOP_LOG_LEVEL",
        "--log-level",
        "DEBUG, INFO, WARNING or ERROR (any case)",
    ),
    "log_format": ("PITSTOP_LOG_FORMAT", "--log-format", "text or json (one object per line)"),
    "pod_name": ("PITSTOP_POD_NAME", "--pod-name", "the brain's own pod name (downward API)"),
    "clock_skew_warning_seconds": (
        "PITSTOP_CLOCK_SKEW_WARNING_SECONDS",
        "--clock-skew-warning-seconds",
        "seconds, > 0: a host clock off the API server's by more is told",
    ),
    "cluster_name": (
        "PITSTOP_CLUSTER_NAME",
        "--cluster-name",
        "the cluster's name, $cluster in notification templates",
    ),
}


class SettingsError(ValueError):
    """A setting has a bad value; the message names it and the expected form."""


def load_settings(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> BrainSettings:
    parser = argparse.ArgumentParser(prog="pitstop-brain", description="Pitstop's brain.")
    parser.add_argument("--version", action="version", version=version_line("pitstop-brain"))
    for name, (variable, flag, form) in SOURCES.items():
        parser.add_argument(flag, dest=name, help=f"{form} (env {variable})")
    arguments = vars(parser.parse_args(list(argv)))
    raw: dict[str, str] = {}
    for name, (variable, _, _) in SOURCES.items():
        value = arguments.get(name) or environ.get(variable)
        if value is not None and value != "":
            raw[name] = value
    try:
        return BrainSettings.model_validate(raw)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            name = str(item["loc"][0]) if item["loc"] else "?"
            variable, flag, form = SOURCES.get(name, (name, name, ""))
            problems.append(
                f"{flag} / {variable}={raw.get(name)!r}: {item['msg']}; expected {form}"
            )
        raise SettingsError("invalid brain setting: " + "; ".join(problems)) from None
