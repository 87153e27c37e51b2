"""Log output of the brain and the detector: `text` for people, `json` for log pipelines.

One JSON object per line with `time`, `level`, `logger` and `message`, plus the object a line is
about as its own fields (`window`, `node`, `kind`/`name` for kopf's object logs), so a pipeline
can filter on them instead of parsing messages. Both programs (and kopf's own records, which
reach the root logger) go through the same handler. Stdlib only: the detector imports it too.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The window a brain task works for: set once per window task (asyncio tasks and to_thread
# calls copy it), so every line of that window's passes names it without threading it through.
current_window: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pitstop_current_window", default=None
)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
# kopf's own extras: its settings object and its event-posting switch are not log content.
_KOPF_INTERNAL = frozenset({"settings", "k8s_skip", "k8s_ref"})


def normalise_level(text: str) -> str:
    """`info`, `Info` or `INFO` -> `INFO`; ValueError for anything else."""
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"not a log level: {text!r}")
    return level


def normalise_format(text: str) -> str:
    """`json`, `JSON` -> `json`; ValueError for anything else."""
    log_format = text.strip().lower()
    if log_format not in LOG_FORMATS:
        raise ValueError(f"not a log format: {text!r}")
    return log_format


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    return str(value)


def object_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields naming what a record is about: `extra=` keys, the task's window, kopf's ref."""
    fields: dict[str, Any] = {}
    window = current_window.get()
    if window:
        fields["window"] = window
    reference = getattr(record, "k8s_ref", None)
    if isinstance(reference, dict):
        for key in ("kind", "name", "namespace"):
            if reference.get(key):
                fields[key] = reference[key]
    for key, value in record.__dict__.items():
        if key not in _STANDARD_ATTRIBUTES and key not in _KOPF_INTERNAL:
            fields[key] = _json_safe(value)
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in object_fields(record).items():
            document.setdefault(key, value)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, ensure_ascii=False)


def make_formatter(log_format: str) -> logging.Formatter:
    if normalise_format(log_format) == "json":
        return JsonFormatter()
    return logging.Formatter(TEXT_FORMAT)


class _AddFields(logging.Filter):
    """Fields every record of this process is about (the detector's own node)."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        super().__init__()
        self.fields = dict(fields)

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self.fields.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def configure(
    level: str,
    log_format: str = "text",
    stream: TextIO | None = None,
    fields: Mapping[str, str] | None = None,
) -> None:
    """Send every logger's records (ours, kopf's, the client's) to one handler on `stream`."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    if fields:
        handler.addFilter(_AddFields(fields))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(normalise_level(level))
