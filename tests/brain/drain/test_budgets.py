"""Which budgets covered the evicted pods (the health gate's list)."""

from __future__ import annotations

from typing import Any

from brain.drain.budgets import covering_budgets
from brain.drain.classify import PodRef


def budget(namespace: str, name: str, selector: dict[str, Any] | None) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name}, "spec": {"selector": selector}}


def test_covering_budgets_match_by_namespace_and_selector() -> None:
    web = PodRef("shop", "web-1", "u1")
    other = PodRef("blog", "web-1", "u2")
    budgets = [
        budget("shop", "web", {"matchLabels": {"app": "web"}}),
        budget("shop", "everything", {}),
        budget("shop", "nothing", None),
        budget("blog", "db", {"matchLabels": {"app": "db"}}),
    ]
    covering = covering_budgets(budgets, {web: {"app": "web"}, other: {"app": "web"}})
    assert covering[web] == ["shop/web", "shop/everything"]
    assert covering[other] == []
