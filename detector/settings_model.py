"""The pydantic model that validates the detector's settings.

Imported only inside the short-lived validation child (see `detector.settings`): pydantic costs
~18 MiB of resident memory once a model is built, more than half the detector's budget, and the
long-running process never needs it again after start-up.
"""

from __future__ import annotations

import re
from ipaddress import ip_address
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# RFC 1123 DNS subdomain, the form of a Node name.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

Seconds = Annotated[float, Field(allow_inf_nan=False)]


class DetectorSettingsModel(BaseModel):
    """Every setting, as validated; field names match `detector.settings.Settings`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node_name: str
    sentinel_path: str = "/kured/reboot-required"
    poll_interval_seconds: Seconds = Field(default=60.0, ge=1.0, le=3600.0)
    metrics_port: int = Field(default=8080, ge=0, le=65535)
    metrics_address: str = "0.0.0.0"
    kured_compatibility: bool = False
    stale_after_seconds: Seconds = Field(default=300.0, ge=1.0, le=86400.0)
    backoff_initial_seconds: Seconds = Field(default=0.5, ge=0.01, le=60.0)
    backoff_max_seconds: Seconds = Field(default=30.0, ge=0.1, le=3600.0)
    api_timeout_seconds: Seconds = Field(default=10.0, ge=0.5, le=300.0)
    kubeconfig: str | None = None
    service_account_dir: str = "/var/run/secrets/kubernetes.io/serviceaccount"
    in_cluster_host: str | None = None
    in_cluster_port: int = Field(default=443, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"

    @field_validator("node_name")
    @classmethod
    def _node_name(cls, value: str) -> str:
        if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
            raise ValueError("not a Node name")
        return value

    @field_validator("sentinel_path", "service_account_dir")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        path = PurePosixPath(value)
        if not path.is_absolute() or path.name in ("", ".", ".."):
            raise ValueError("not an absolute file path")
        return str(path)

    @field_validator("kubeconfig")
    @classmethod
    def _optional_path(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("in_cluster_host")
    @classmethod
    def _optional_host(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("metrics_address")
    @classmethod
    def _address(cls, value: str) -> str:
        ip_address(value)  # raises ValueError for anything but an IPv4/IPv6 address
        return value

    @field_validator("kured_compatibility", mode="before")
    @classmethod
    def _boolean(cls, value: Any) -> Any:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError("not a boolean")
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lowercase(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> DetectorSettingsModel:
        if self.backoff_max_seconds < self.backoff_initial_seconds:
            raise ValueError("backoff_max_seconds must not be below backoff_initial_seconds")
        if self.kubeconfig is None and self.in_cluster_host is None:
            raise ValueError("no API server: not in a cluster and no kubeconfig")
        return self


def validate(raw: dict[str, str]) -> dict[str, Any]:
    """Validate raw strings; returns plain JSON-able values or raises ValidationError."""
    return DetectorSettingsModel.model_validate(raw).model_dump(mode="json")


__all__ = ["DetectorSettingsModel", "ValidationError", "validate"]
