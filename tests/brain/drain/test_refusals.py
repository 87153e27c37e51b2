"""Saying why a drain is not done: the refusal log and the timeout message."""

from __future__ import annotations

from brain.drain.classify import PodRef
from brain.drain.refusals import PodProgress, RefusalLog, timeout_message


def test_the_timeout_message_names_the_budget_and_counts_pods() -> None:
    blocked = [
        PodProgress(PodRef("default", f"web-{i}"), blocked=True, blocking_pdb="default/web")
        for i in range(2)
    ]
    assert timeout_message(blocked) == (
        "2 pods still protected by PDB default/web at the drain timeout"
    )
    mixed = [
        blocked[0],
        PodProgress(PodRef("a", "slow"), evicted=True),
        PodProgress(PodRef("a", "broken"), last_error="HTTP 500: boom"),
    ]
    message = timeout_message(mixed)
    assert "1 pod still protected by PDB default/web" in message
    assert "1 pod evicted but not gone yet: a/slow" in message
    assert "pod a/broken could not be evicted: HTTP 500: boom" in message


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


WEB_1 = PodRef("shop", "web-1", "u1")


DB_1 = PodRef("shop", "db-1", "u2")


def test_a_blocked_drain_is_told_at_once_then_at_most_once_a_minute() -> None:
    clock = Clock()
    refusals = RefusalLog("node-1", clock=clock)
    lines = []
    for _ in range(30):  # a refusal every 5 s (the retry pace) for 150 s
        lines.append((clock.now - 1000.0, refusals.refused(WEB_1, "shop/web")))
        clock.now += 5.0
    logged = {at: line for at, line in lines if line is not None}
    prefix = "drain of node node-1 blocked: PDB shop/web refuses evicting pod shop/web-1"
    assert logged == {
        0.0: f"{prefix} (for 0 s)",
        60.0: f"{prefix} (for 60 s)",
        120.0: f"{prefix} (for 120 s)",
    }


def test_each_line_names_the_budgets_refusing_since_the_last_one() -> None:
    clock = Clock()
    refusals = RefusalLog("node-1", clock=clock)
    assert refusals.refused(WEB_1, "shop/web") is not None
    clock.now += 10.0
    assert refusals.refused(DB_1, "shop/db") is None  # within the minute: said at the next line
    clock.now += 55.0
    line = refusals.refused(DB_1, "shop/db")
    assert line == (
        "drain of node node-1 blocked: PDB shop/db refuses evicting pod shop/db-1 (for 55 s)"
    ), "shop/web stopped refusing before this minute: not named again"
    clock.now += 30.0
    assert refusals.refused(WEB_1, None) is None
    clock.now += 30.0
    line = refusals.refused(WEB_1, "shop/web")
    assert line == (
        "drain of node node-1 blocked: PDB shop/web refuses evicting pod shop/web-1 (for 0 s); "
        "an unnamed budget (429) refuses evicting pod shop/web-1 (for 30 s)"
    ), "a budget refusing again after more than a minute is counted from its new refusal"
