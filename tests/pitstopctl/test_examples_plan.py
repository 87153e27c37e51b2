"""examples/ as the planner sees them: together without a Conflict, each window governing the
nodes and opening when its comment says, the release freeze a blackout. Dates are in the year
examples/README.md documents, a future one. (The same on a real API server, with `pitstop plan
-o json`: tests/integration/test_examples.py.)"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from pitstopctl.plan_document import plan_document
from pitstopctl.plan_report import ClusterSnapshot, preview
from tests.pitstopctl.test_plan_report import node

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example_windows() -> list[dict[str, Any]]:
    return [
        document
        for path in sorted(EXAMPLES.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def example_nodes() -> list[dict[str, Any]]:
    control_plane = node("cp-1", pool="system")
    control_plane["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] = ""
    return [
        node("gpu-1", pool="gpu", flagged_at="2030-01-01T00:00:00Z"),
        node("general-1", pool="general", flagged_at="2030-01-01T00:00:00Z"),
        node("batch-1", pool="batch", flagged_at="2030-01-01T00:00:00Z"),
        node("other-1", pool="web", flagged_at="2030-01-01T00:00:00Z"),
        control_plane,
    ]


# The node each window governs, as its comment says.
GOVERNS = {
    "emergency-gpu-pool": ["gpu-1"],
    "weekend-nights": ["general-1"],
    "ten-percent-per-zone": ["batch-1"],
    "release-freeze": ["other-1"],
}


def documented_year() -> int:
    match = re.search(r"\*\*(\d{4})\*\*", (EXAMPLES / "README.md").read_text())
    assert match, "examples/README.md names no year"
    return int(match.group(1))


def plan_at(moment: datetime) -> dict[str, Any]:
    snapshot = ClusterSnapshot(windows=example_windows(), nodes=example_nodes())
    return plan_document(preview(snapshot, moment))


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {window["name"]: window for window in document["windows"]}


def test_dates_are_in_the_documented_future_year() -> None:
    year = documented_year()
    assert year > datetime.now(UTC).year, "examples/README.md: move the examples' year on"
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for found in re.findall(r"\b(\d{4})-\d\d-\d\dT", path.read_text()):
            assert int(found) in (year, year + 1), f"{path.name}: {found}"


def test_together_without_conflict_each_window_governs_its_pool() -> None:
    document = plan_at(datetime(2030, 6, 4, 12, tzinfo=UTC))  # a Tuesday, no freeze
    assert document["conflicts"] == []
    assert document["invalidWindows"] == []
    windows = by_name(document)
    assert {name: w["governed"] for name, w in windows.items()} == GOVERNS
    assert document["flaggedUngoverned"] == []  # cp-1 is not flagged and governed by none
    priorities = [w["priority"] for w in windows.values()]
    assert len(set(priorities)) == len(priorities)


def test_release_freeze_is_a_blackout_not_an_always_open_window() -> None:
    year = documented_year()
    monday_night = plan_at(datetime(year, 6, 3, 2, 30, tzinfo=UTC))
    freeze = by_name(monday_night)["release-freeze"]
    assert freeze["open"] and freeze["openUntil"] == f"{year}-06-03T04:00:00Z"
    tuesday_noon = by_name(plan_at(datetime(year, 6, 4, 12, tzinfo=UTC)))["release-freeze"]
    assert not tuesday_noon["open"]
    assert tuesday_noon["nextOpen"] == f"{year}-06-05T02:00:00Z"
    # Inside the blackout: closed, and the next opening is the first weeknight after it.
    in_freeze = plan_at(datetime(year, 12, 23, 2, 30, tzinfo=UTC))  # a Monday, 02:30
    for name in ("release-freeze", "weekend-nights", "ten-percent-per-zone"):
        window = by_name(in_freeze)[name]
        assert not window["open"], name
        assert window["nextOpen"] >= f"{year + 1}-01-05T08:00:00Z", name


def test_the_emergency_window_opens_only_on_its_night() -> None:
    year = documented_year()
    before = by_name(plan_at(datetime(year, 6, 4, 12, tzinfo=UTC)))["emergency-gpu-pool"]
    assert not before["open"]
    assert (before["nextOpen"], before["nextClose"]) == (
        f"{year}-12-24T20:00:00Z",
        f"{year}-12-25T04:00:00Z",
    )
    during = plan_at(datetime(year, 12, 24, 22, tzinfo=UTC))
    emergency = by_name(during)["emergency-gpu-pool"]
    assert emergency["open"] and [f["node"] for f in emergency["flagged"]] == ["gpu-1"]
    assert emergency["flagged"][0]["startsNow"]
