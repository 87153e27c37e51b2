"""The Prometheus blocker: active alerts hold the window, and so does a Prometheus we cannot read.

It reads Prometheus' `GET /api/v1/alerts` (kured's source, so a migrated setup keeps working).
A URL whose path already ends in `/api/v2/alerts` is read as Alertmanager's v2 API instead:
every alert there is firing, and silenced or inhibited (suppressed) ones are skipped.

The filter follows kured: `alert_filter` is a regular expression searched in each alert's
`alertname`; matching alerts are ignored, or with `filter_match_only` they are the only ones
that count. An empty filter counts every alert. With `firing_only`, pending alerts don't count.

A Prometheus that does not answer, answers an error or answers something that is not its
alerts API blocks the window ("cannot reach ..."): no answer is never read as "no alerts".
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from brain.integrations.blockers.result import NOT_BLOCKED, BlockerResult, Reason, name_a_few

PROMETHEUS_ALERTS_PATH = "/api/v1/alerts"
ALERTMANAGER_ALERTS_PATH = "/api/v2/alerts"
# Bodies above this size are not an alerts answer we want to parse in the brain.
MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class PrometheusConfig:
    """`spec.blockers.prometheus` of a window."""

    url: str
    alert_filter: str = ""
    filter_match_only: bool = False
    firing_only: bool = True


@dataclass(frozen=True)
class Alert:
    name: str
    firing: bool


class _UnreadableAnswerError(Exception):
    """The server answered, but not with an alerts list."""


def alerts_url(url: str) -> str:
    """The alerts endpoint of a Prometheus base URL (kept as is when it already names one)."""
    path = urlsplit(url).path.rstrip("/")
    if path.endswith((PROMETHEUS_ALERTS_PATH, ALERTMANAGER_ALERTS_PATH)):
        return url
    return url.rstrip("/") + PROMETHEUS_ALERTS_PATH


def parse_alerts(body: Any) -> list[Alert]:
    """Alerts from a Prometheus v1 or Alertmanager v2 answer; anything else is unreadable."""
    if isinstance(body, list):  # Alertmanager v2: a bare list, every alert is firing.
        alerts = []
        for item in body:
            if not isinstance(item, dict) or not isinstance(item.get("labels"), dict):
                raise _UnreadableAnswerError("an alert without labels")
            state = (item.get("status") or {}).get("state", "active")
            if state == "suppressed":
                continue
            alerts.append(Alert(name=str(item["labels"].get("alertname", "")), firing=True))
        return alerts
    if not isinstance(body, dict) or body.get("status") != "success":
        raise _UnreadableAnswerError("not a successful Prometheus API answer")
    items = (body.get("data") or {}).get("alerts")
    if not isinstance(items, list):
        raise _UnreadableAnswerError("no data.alerts list")
    alerts = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("labels"), dict):
            raise _UnreadableAnswerError("an alert without labels")
        alerts.append(
            Alert(
                name=str(item["labels"].get("alertname", "")), firing=item.get("state") == "firing"
            )
        )
    return alerts


def blocking_alert_names(alerts: Sequence[Alert], config: PrometheusConfig) -> list[str]:
    """The names of the alerts that block under the window's filter, sorted, without repeats."""
    pattern = re.compile(config.alert_filter) if config.alert_filter else None
    names: set[str] = set()
    for alert in alerts:
        if config.firing_only and not alert.firing:
            continue
        if pattern is not None and bool(pattern.search(alert.name)) != config.filter_match_only:
            continue
        names.add(alert.name)
    return sorted(names)


async def fetch_alerts(url: str, timeout_seconds: float) -> list[Alert]:
    """GET the alerts; raises on any failure to read them (the caller turns it into blocked)."""
    timeout = aiohttp.ClientTimeout(total=timeout_seconds)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(alerts_url(url), headers={"Accept": "application/json"}) as response,
    ):
        if response.status != 200:
            raise _UnreadableAnswerError(f"HTTP {response.status}")
        if response.content_length is not None and response.content_length > MAX_BODY_BYTES:
            raise _UnreadableAnswerError("answer too large")
        raw = await response.content.read(MAX_BODY_BYTES + 1)
        if len(raw) > MAX_BODY_BYTES:
            raise _UnreadableAnswerError("answer too large")
        try:
            body = json.loads(raw)
        except ValueError as error:
            raise _UnreadableAnswerError("invalid JSON") from error
        return parse_alerts(body)


async def check_prometheus(
    config: PrometheusConfig, timeout_seconds: float = 10.0
) -> BlockerResult:
    """Blocked when a counted alert is active or when the alerts cannot be read in time."""
    target = alerts_url(config.url)
    try:
        alerts = await fetch_alerts(config.url, timeout_seconds)
    except TimeoutError:  # asyncio's timeout is the builtin one since Python 3.11
        return _unreachable(target, f"no answer within {timeout_seconds:g} s")
    except _UnreadableAnswerError as error:
        return _unreachable(target, str(error))
    except (aiohttp.ClientError, OSError, ValueError) as error:
        return _unreachable(target, f"{type(error).__name__}: {error}")
    try:
        names = blocking_alert_names(alerts, config)
    except re.error as error:
        return BlockerResult(
            blocked=True,
            reason=Reason.INVALID_BLOCKER,
            message=f"invalid alertFilter {config.alert_filter!r}: {error}",
        )
    if not names:
        return NOT_BLOCKED
    noun = "alert is" if len(names) == 1 else "alerts are"
    return BlockerResult(
        blocked=True,
        reason=Reason.PROMETHEUS_ALERTS,
        message=f"{len(names)} {noun} active in {target}: {name_a_few(names)}",
    )


def _unreachable(target: str, why: str) -> BlockerResult:
    return BlockerResult(
        blocked=True,
        reason=Reason.PROMETHEUS_UNREACHABLE,
        message=f"cannot reach {target} ({why}); blocked until its alerts can be read",
    )


__all__ = [
    "Alert",
    "PrometheusConfig",
    "alerts_url",
    "blocking_alert_names",
    "check_prometheus",
    "fetch_alerts",
    "parse_alerts",
]
