"""Notifications through apprise: people hear about starts, successes, failures and blocks.

Where to send comes from the Secret named by a window's `notify.secretRef`. Each value of the
Secret (or only the value under `secretRef.key`, when given) is apprise's plain-text config:
one apprise URL per line, blank lines and lines starting with `#` ignored, and optional tags
before an `=` that name the events this URL gets (case-insensitive):

    slack://TokenA/TokenB/TokenC/#ops
    failed,blocked=mailtos://user:password@example.com?to=oncall@example.com

A URL without tags gets every event the window's `notify.events` selects; a URL with tags only
those of its tags. Apprise knows about a hundred services: https://github.com/caronc/apprise/wiki

Sending never blocks the flow and never raises into it: `Notifier.send` puts the message on a
bounded queue that one background thread works through. A failed send is logged (without its
URL: URLs carry credentials) and reported to `on_failure` (the metrics module counts it in
`pitstop_notifications_failed_total`); when the queue is full the message is dropped and
reported the same way.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import queue
import re
import string
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import ModuleType
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 100


class NotifyEvent(StrEnum):
    """The transitions a window can notify about (`notify.events`).

    The same names as the CRD's `notify.events` enum. `Notifier` compares event names as text,
    case-insensitively.
    """

    STARTED = "Started"  # a node left Pending: cordoned, draining
    SUCCEEDED = "Succeeded"  # a node is back, healthy and uncordoned
    FAILED = "Failed"  # a node is Failed (or a drain was aborted)
    BLOCKED = "Blocked"  # the window became blocked (a blocker, a failing hook)
    CONFLICT = "Conflict"  # two windows of the same priority claim a node
    WINDOW_OPENED = "WindowOpened"  # the schedule opened with nodes waiting
    ROLLOUT_COMPLETE = "RolloutComplete"  # no flagged node left in the window


class FailureKind(StrEnum):
    SEND_FAILED = "SendFailed"
    QUEUE_FULL = "QueueFull"


def _apprise() -> ModuleType:
    """apprise, imported when a window first has notification targets: it loads a hundred
    service plugins (a quarter of a second and megabytes the brain needs only then)."""
    import apprise

    return apprise


# apprise's NotifyType values (a str enum), spelled out so that formatting a message (the brain,
# `pitstop plan --notify-preview`) does not import apprise.
_NOTIFY_TYPES: Mapping[str, str] = {
    NotifyEvent.SUCCEEDED: "success",
    NotifyEvent.ROLLOUT_COMPLETE: "success",
    NotifyEvent.FAILED: "failure",
    NotifyEvent.BLOCKED: "warning",
    NotifyEvent.CONFLICT: "warning",
}
# Tags before the URL: letters, digits, '-', '_', separated by commas or spaces.
_TAGGED_LINE = re.compile(r"^\s*(?P<tags>[\w\-]+(?:[\s,]+[\w\-]+)*)\s*=\s*(?P<url>\S+://\S*)\s*$")


@dataclass(frozen=True)
class NotifyTarget:
    """One apprise URL and the events it is limited to (no tags: every selected event)."""

    url: str
    tags: frozenset[str] = frozenset()

    def wants(self, event: str) -> bool:
        return not self.tags or event.lower() in self.tags


@dataclass(frozen=True)
class Message:
    event: str
    title: str
    body: str
    notify_type: Any


def parse_targets(text: str) -> tuple[list[NotifyTarget], list[str]]:
    """Targets from apprise's text config; also the problems found (which never quote a URL)."""
    targets: list[NotifyTarget] = []
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        tags: frozenset[str] = frozenset()
        url = line
        tagged = _TAGGED_LINE.match(line)
        if tagged and "://" not in tagged["tags"]:
            tags = frozenset(tag.lower() for tag in re.split(r"[\s,]+", tagged["tags"]) if tag)
            url = tagged["url"]
        if _apprise().Apprise.instantiate(url) is None:
            scheme = url.split("://", 1)[0] if "://" in url else "(no scheme)"
            problems.append(f"line {number}: not a valid apprise URL (scheme {scheme})")
            continue
        targets.append(NotifyTarget(url=url, tags=tags))
    return targets, problems


def targets_from_secret_data(
    data: Mapping[str, str], key: str | None = None, base64_encoded: bool = True
) -> tuple[list[NotifyTarget], list[str]]:
    """Targets from a Secret's `data` (base64 as the API returns it) or decoded `stringData`.

    With `key`, only that value is read (a missing key is a problem); else every value.
    """
    if key is not None and key not in data:
        return [], [f"the Secret has no key {key!r}"]
    targets: list[NotifyTarget] = []
    problems: list[str] = []
    for name in [key] if key is not None else sorted(data):
        value = data[name]
        if base64_encoded:
            try:
                value = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                problems.append(f"key {name!r}: not base64-encoded UTF-8 text")
                continue
        found, found_problems = parse_targets(value)
        targets += found
        problems += [f"key {name!r} {problem}" for problem in found_problems]
    return targets, problems


@dataclass(frozen=True)
class MessageTemplates:
    """A window's `notify.title` / `notify.body` (string.Template; None: the built-in text) and
    the brain's cluster name for `$cluster`. Placeholders were checked when the spec parsed."""

    title: str | None = None
    body: str | None = None
    cluster: str = ""


def format_message(
    event: str,
    window: str,
    node: str | None,
    phase: str | None,
    reason: str | None,
    message: str | None = None,
    templates: MessageTemplates | None = None,
) -> Message:
    """Title and body a person can act on: which node, which window, what phase, and why."""
    subject = f"node {node}" if node else f"window {window}"
    title = f"Pitstop: {event} - {subject}"
    why = ": ".join(part for part in (reason, message) if part)
    lines = [f"Event: {event}", f"Window: {window}"]
    if node:
        lines.append(f"Node: {node}")
    if phase:
        lines.append(f"Phase: {phase}")
    if why:
        lines.append(f"Reason: {why}")
    body = "\n".join(lines)
    if templates is not None:
        values = {
            "cluster": templates.cluster,
            "window": window,
            "node": node or "",
            "event": event,
            "phase": phase or "",
            "reason": reason or "",
            "message": message or "",
        }
        # safe_substitute: a template that slipped past validation still sends, never raises.
        if templates.title is not None:
            title = string.Template(templates.title).safe_substitute(values)
        if templates.body is not None:
            body = string.Template(templates.body).safe_substitute(values)
    notify_type = _NOTIFY_TYPES.get(event, "info")
    return Message(event=event, title=title, body=body, notify_type=notify_type)


class Notifier:
    """Sends one window's notifications in the background; `send` never blocks or raises.

    `events` are the selected event names (`notify.events`); `on_failure` is called (from the
    worker thread, or from `send` when the queue is full) with the kind of failure.
    """

    def __init__(
        self,
        targets: Sequence[NotifyTarget],
        events: Collection[str],
        on_failure: Callable[[FailureKind], None] | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        name: str = "notifier",
        templates: MessageTemplates | None = None,
    ) -> None:
        self.events = frozenset(event.lower() for event in events)
        self.templates = templates
        self.failed = 0
        self.dropped = 0
        self.sent = 0
        self._on_failure = on_failure
        apprise = _apprise() if targets else None
        self._services: list[tuple[NotifyTarget, Any]] = [
            (target, apprise.Apprise.instantiate(target.url)) for target in targets if apprise
        ]
        self._queue: queue.Queue[Message | None] = queue.Queue(maxsize=queue_size)
        self._closed = threading.Event()
        self._counts_lock = threading.Lock()
        self._worker = threading.Thread(target=self._work, name=f"pitstop-{name}", daemon=True)
        self._worker.start()

    def wants(self, event: str) -> bool:
        return event.lower() in self.events and any(t.wants(event) for t, _ in self._services)

    def send(
        self,
        event: str,
        window: str,
        node: str | None = None,
        phase: str | None = None,
        reason: str | None = None,
        message: str | None = None,
    ) -> bool:
        """Queue a notification; False when the event is not selected, or dropped (queue full)."""
        if self._closed.is_set() or not self.wants(event):
            return False
        try:
            self._queue.put_nowait(
                format_message(event, window, node, phase, reason, message, self.templates)
            )
        except queue.Full:
            logger.warning("notification queue full: dropped %s for %s", event, node or window)
            self._count_failure(FailureKind.QUEUE_FULL)
            return False
        return True

    def close(self, timeout_seconds: float = 10.0) -> None:
        """Stop accepting messages; send what is queued within `timeout_seconds`; stop."""
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout_seconds)
        self._worker.join(timeout=timeout_seconds)

    def _count_failure(self, kind: FailureKind) -> None:
        with self._counts_lock:
            if kind is FailureKind.QUEUE_FULL:
                self.dropped += 1
            else:
                self.failed += 1
        if self._on_failure is not None:
            try:
                self._on_failure(kind)
            except Exception:
                logger.exception("notification failure callback raised")

    def _work(self) -> None:
        while True:
            message = self._queue.get()
            if message is None:
                return
            for target, service in self._services:
                if target.wants(message.event):
                    self._deliver(service, message)

    def _deliver(self, service: Any, message: Message) -> None:
        try:
            ok = bool(
                service.notify(
                    body=message.body,
                    title=message.title,
                    notify_type=_apprise().NotifyType(message.notify_type),
                )
            )
        except Exception as error:  # an apprise plugin must never kill the worker
            logger.warning("notification via %s raised: %s", service.service_name, error)
            ok = False
        if ok:
            with self._counts_lock:
                self.sent += 1
            return
        logger.warning("notification %s via %s failed", message.event, service.service_name)
        self._count_failure(FailureKind.SEND_FAILED)
