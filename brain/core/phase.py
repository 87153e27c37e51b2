"""The phases a node goes through, and which transitions between them are legal.

Pending is derived (flagged, governed, not in the lock); every other phase except Done is held
in the lock, so the lock alone says who is in maintenance.
"""

from __future__ import annotations

import logging
from enum import StrEnum

log = logging.getLogger("pitstop.phase")


class Phase(StrEnum):
    PENDING = "Pending"
    DRAINING = "Draining"
    REBOOTING = "Rebooting"
    WAITING_FOR_NODE = "WaitingForNode"
    HEALTH_CHECK = "HealthCheck"
    DONE = "Done"
    FAILED = "Failed"


# Phases that hold a slot of a window's budget (every phase recorded in the lock).
IN_MAINTENANCE: frozenset[Phase] = frozenset(
    {Phase.DRAINING, Phase.REBOOTING, Phase.WAITING_FOR_NODE, Phase.HEALTH_CHECK, Phase.FAILED}
)

TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.PENDING: frozenset({Phase.DRAINING}),
    # Draining may go back to Pending (drain aborted at its timeout: slot freed, node uncordoned).
    Phase.DRAINING: frozenset({Phase.REBOOTING, Phase.PENDING, Phase.FAILED}),
    # Rebooting goes back to Draining when the node is found uncordoned (never rebooted so).
    # A person may release a node from any phase: its slot is freed (Pending, resting).
    Phase.REBOOTING: frozenset(
        {Phase.WAITING_FOR_NODE, Phase.FAILED, Phase.DRAINING, Phase.PENDING}
    ),
    Phase.WAITING_FOR_NODE: frozenset({Phase.HEALTH_CHECK, Phase.FAILED, Phase.PENDING}),
    Phase.HEALTH_CHECK: frozenset({Phase.DONE, Phase.FAILED, Phase.PENDING}),
    # A person acts on a Failed node: retry (back to Draining) or release (slot freed).
    Phase.FAILED: frozenset({Phase.DRAINING, Phase.PENDING, Phase.DONE}),
    Phase.DONE: frozenset(),
}


def can_transition(current: Phase, target: Phase) -> bool:
    return target in TRANSITIONS[current]


class IllegalTransitionError(ValueError):
    """A step asked for a phase change TRANSITIONS does not allow: refused, nothing written."""


def check_transition(node: str, current: Phase, target: Phase) -> None:
    """The one check every phase change goes through before it is written to the lock."""
    if not can_transition(current, target):
        log.error("node %s: illegal transition %s -> %s refused", node, current, target)
        raise IllegalTransitionError(f"node {node}: illegal transition {current} -> {target}")
