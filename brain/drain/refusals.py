"""Saying why a drain is not done: each pod's eviction progress, a log line for budgets that
refuse (at most one a minute), and the message for pods still there at the deadline."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from brain.drain.classify import PodRef


@dataclass
class PodProgress:
    pod: PodRef
    attempts: int = 0
    evicted: bool = False
    blocking_pdb: str | None = None
    blocked: bool = False
    last_error: str = ""


@dataclass
class _Refusals:
    first: float
    last: float
    pod: PodRef
    untold: bool = True  # refused since the last line


class RefusalLog:
    """Says in the log which budgets refuse a drain's evictions, and for how long.

    A refused eviction is retried every few seconds for as long as the drain lasts: a line per
    refusal would flood the log, none (as before) leaves a stalled drain silent. So: one line
    at the drain's first refusal, then at most one every `every_seconds`, naming each budget
    that refused since the last line. `refused` returns the line to log now, or None.
    """

    def __init__(
        self,
        node: str,
        every_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.every_seconds = every_seconds
        self._clock = clock
        self._budgets: dict[str, _Refusals] = {}
        self._logged_at: float | None = None

    def refused(self, pod: PodRef, pdb: str | None) -> str | None:
        now = self._clock()
        budget = f"PDB {pdb}" if pdb else "an unnamed budget (429)"
        known = self._budgets.get(budget)
        if known is None or now - known.last > self.every_seconds:  # refusing anew
            self._budgets[budget] = _Refusals(now, now, pod)
        else:
            known.last, known.pod, known.untold = now, pod, True
        if self._logged_at is not None and now - self._logged_at < self.every_seconds:
            return None
        self._logged_at = now
        parts = []
        for name, refusals in sorted(self._budgets.items()):
            if refusals.untold:
                parts.append(
                    f"{name} refuses evicting pod {refusals.pod} (for {now - refusals.first:.0f} s)"
                )
                refusals.untold = False
        return f"drain of node {self.node} blocked: " + "; ".join(parts)


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def timeout_message(stuck: Sequence[PodProgress]) -> str:
    """Say why each pod still there at the deadline is there, grouped by cause."""
    by_budget: dict[str, list[PodRef]] = {}
    parts: list[str] = []
    unnamed_blocked: list[PodRef] = []
    not_gone: list[PodRef] = []
    failing: list[PodProgress] = []
    not_tried: list[PodRef] = []
    for progress in stuck:
        if progress.blocked and progress.blocking_pdb:
            by_budget.setdefault(progress.blocking_pdb, []).append(progress.pod)
        elif progress.blocked:
            unnamed_blocked.append(progress.pod)
        elif progress.evicted:
            not_gone.append(progress.pod)
        elif progress.last_error:
            failing.append(progress)
        else:
            not_tried.append(progress.pod)
    for budget, pods in sorted(by_budget.items()):
        parts.append(f"{plural(len(pods), 'pod')} still protected by PDB {budget}")
    if unnamed_blocked:
        names = ", ".join(map(str, unnamed_blocked))
        parts.append(f"{plural(len(unnamed_blocked), 'pod')} still refused eviction (429): {names}")
    if not_gone:
        names = ", ".join(map(str, not_gone))
        parts.append(f"{plural(len(not_gone), 'pod')} evicted but not gone yet: {names}")
    for progress in failing:
        parts.append(f"pod {progress.pod} could not be evicted: {progress.last_error}")
    if not_tried:
        names = ", ".join(map(str, not_tried))
        parts.append(f"{plural(len(not_tried), 'pod')} not evicted yet: {names}")
    return "; ".join(parts) + " at the drain timeout"
