"""`pitstop plan -o json|yaml` (the documented schema) and `pitstop status`, without a cluster."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import yaml

from brain.core.lock_state import LockState, NodeLease
from brain.core.phase import Phase
from pitstopctl.plan_document import plan_document, render_document
from pitstopctl.plan_report import ClusterSnapshot, preview
from pitstopctl.status_report import age, render_status
from tests.pitstopctl.test_plan_report import NOW, node, snapshot, window

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_json_says_what_the_text_says() -> None:
    document = plan_document(preview(snapshot(), NOW))
    assert document["apiVersion"] == "pitstop.dev/plan/v1"
    assert document["time"] == "2025-06-04T12:00:00Z"
    general = next(w for w in document["windows"] if w["name"] == "general")
    assert general["open"] is True and general["openUntil"] is None
    assert general["budget"] == {"used": 2, "limit": 2, "inMaintenance": 1, "unhealthy": 1,
                                 "free": 0}  # fmt: skip
    assert [f["node"] for f in general["flagged"]] == ["g-b2", "g-a2", "g-a1", "g-b1", "g-c1"]
    first, second = general["flagged"][:2]
    assert first["startsNow"] and first["alreadyUnavailable"] and first["batch"] == 1
    assert second["heldBack"]["reason"] == "NoBudget"
    assert general["inMaintenance"][0]["node"] == "g-c1-old"
    assert general["inMaintenance"][0]["phase"] == "Rebooting"
    assert general["topology"]["key"] == "topology.kubernetes.io/zone"
    nights = next(w for w in document["windows"] if w["name"] == "gpu-nights")
    assert (nights["open"], nights["nextOpen"]) == (False, "2025-06-07T20:00:00Z")
    assert document["invalidWindows"][0]["name"] == "broken"
    assert document["flaggedUngoverned"] == ["lonely"]


def test_json_and_yaml_are_the_same_document() -> None:
    document = plan_document(preview(snapshot(), NOW))
    from_json = json.loads(render_document(document, "json"))
    assert from_json == document
    assert yaml.safe_load(render_document(document, "yaml")) == from_json


def test_every_field_is_documented() -> None:
    """docs/operations.md lists every key of the JSON document (its schema section)."""
    text = OPERATIONS.read_text()
    schema = text.split("## `pitstop plan -o json`")[1].split("\n## ")[0]
    documented = set(re.findall(r"`([a-zA-Z]+)`", schema))

    def keys(value: object) -> set[str]:
        if isinstance(value, dict):
            return set(value) | {k for item in value.values() for k in keys(item)}
        if isinstance(value, list):
            return {k for item in value for k in keys(item)}
        return set()

    data = snapshot()
    busy = ClusterSnapshot(
        windows=data.windows, nodes=data.nodes,
        lock=LockState(nodes={**data.lock.nodes, "gpu-1": NodeLease(
            window="gpu-special", phase=Phase.FAILED, since=NOW, message="did not come back")}),
    )  # fmt: skip
    missing = keys(plan_document(preview(busy, NOW))) - documented
    assert not missing, f"undocumented fields of pitstop plan -o json: {sorted(missing)}"


def test_status_shows_windows_work_and_what_to_do_about_failures() -> None:
    data = snapshot()
    lock = LockState(
        nodes={
            "g-c1-old": NodeLease(
                window="general", phase=Phase.REBOOTING, since=NOW - timedelta(minutes=3)
            ),
            "gpu-1": NodeLease(
                window="gpu-special",
                phase=Phase.FAILED,
                since=NOW - timedelta(hours=5),
                message="did not come back within 15m",
            ),
        }
    )
    text = render_status(preview(ClusterSnapshot(data.windows, data.nodes, lock), NOW))
    lines = text.splitlines()
    assert lines[0] == "pitstop status at 2025-06-04T12:00:00Z"
    header = next(line for line in lines if line.startswith("WINDOW"))
    assert header.split() == ["WINDOW", "OPEN", "GOVERNED", "FLAGGED", "IN", "MAINTENANCE",
                              "FAILED", "STATE"]  # fmt: skip
    special = next(line for line in lines if line.startswith("gpu-special "))
    assert special.split()[:6] == ["gpu-special", "yes", "1", "0", "1/1", "1"]
    assert special.endswith("paused by a failed node")
    assert re.search(r"g-c1-old\s+general\s+Rebooting\s+3m\s+1", text)
    failed = text.split("Failed (")[1]
    assert "gpu-1  window gpu-special, failed 5h ago" in failed
    assert "did not come back within 15m" in failed
    assert "pitstop retry gpu-1" in failed and "pitstop release gpu-1" in failed
    assert "Invalid window broken" in text
    assert len(lines) < 40  # one screen


def test_status_of_one_window() -> None:
    data = snapshot()
    only = render_status(preview(data, NOW), "general")
    assert "general" in only and "gpu-nights" not in only and "broken" not in only
    assert "No NodesMaintenanceWindow named nope." in render_status(preview(data, NOW), "nope")
    empty = ClusterSnapshot(windows=[window("w", {})], nodes=[node("n")])
    assert "In maintenance: none" in render_status(preview(empty, NOW))


def test_age_reads_like_kubectl() -> None:
    assert [age(timedelta(seconds=s)) for s in (5, 119, 120, 7199, 7200, 172800)] == [
        "5s", "119s", "2m", "119m", "2h", "2d"]  # fmt: skip
