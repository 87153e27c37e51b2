"""The answer every blocker gives, kept apart so each blocker module imports only this."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    """Why a window is blocked: the `reason` of its `Blocked` condition and of the metric."""

    NOT_BLOCKED = "NotBlocked"
    PROMETHEUS_ALERTS = "PrometheusAlerts"
    PROMETHEUS_UNREACHABLE = "PrometheusUnreachable"
    BLOCKING_PODS = "BlockingPods"
    POD_CHECK_FAILED = "PodCheckFailed"
    NODE_ANNOTATION = "NodeAnnotation"
    INVALID_BLOCKER = "InvalidBlocker"


@dataclass(frozen=True)
class BlockerResult:
    """`blocked` says whether to hold the window; `message` names what blocks, for people."""

    blocked: bool
    reason: str
    message: str


NOT_BLOCKED = BlockerResult(blocked=False, reason=Reason.NOT_BLOCKED, message="")

# Messages name at most this many things (alerts, pods, nodes) and then say how many more.
MAX_NAMED = 5


def name_a_few(names: list[str]) -> str:
    """'a, b, c and 4 more': short enough for a condition message, precise enough to act on."""
    shown = ", ".join(names[:MAX_NAMED])
    hidden = len(names) - MAX_NAMED
    return f"{shown} and {hidden} more" if hidden > 0 else shown
