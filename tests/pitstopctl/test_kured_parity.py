"""kured parity (issue 21), the pure parts: pod blocker scope in the planner and the plan."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from brain import node_updates
from brain.core.lock_state import LockState
from brain.core.node_view import NodeView, Taint
from brain.core.planner import HoldReason, NamedWindow, make_plan
from brain.core.window import parse_window_spec
from brain.integrations.window_blockers import blocker_config
from brain.reboot.node_health import daemonset_pods_not_ready
from pitstop import contract
from pitstopctl.kured_convert import (
    BOOLEAN_FLAGS,
    HANDLED,
    KURED_DEFAULTS,
    NO_EQUIVALENT,
    convert,
    parse_flag_list,
)
from pitstopctl.plan_report import ClusterSnapshot, preview, render

NOW = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)


def window(name: str, **spec: Any) -> NamedWindow:
    return NamedWindow(name, parse_window_spec(spec, name))


def flagged(name: str, minutes_ago: int) -> NodeView:
    return NodeView(
        name=name,
        labels={},
        reboot_required=True,
        reboot_required_since=NOW - timedelta(minutes=minutes_ago),
    )


def test_a_node_held_by_its_own_blocker_waits_and_the_next_one_starts() -> None:
    nodes = [flagged("a", 30), flagged("b", 20), flagged("c", 10)]
    why = "BlockingPods: pod db/backup on the node"
    plan = make_plan([window("w")], nodes, LockState(), NOW, node_blockers={"a": why}).window("w")
    assert [start.node for start in plan.starts] == ["b"]
    held = {item.node: item for item in plan.held_back}
    assert held["a"].reason is HoldReason.NODE_BLOCKED and "db/backup" in held["a"].message
    assert held["c"].reason is HoldReason.NO_BUDGET
    assert plan.blocked_reason is None


def test_an_emergency_ignores_its_node_blocker() -> None:
    node = NodeView(name="a", labels={}, reboot_required=True, emergency=True)
    plan = make_plan([window("w")], [node], LockState(), NOW, node_blockers={"a": "x"})
    assert [start.node for start in plan.window("w").starts] == ["a"]


def test_pod_blockers_are_split_by_scope() -> None:
    spec = parse_window_spec(
        {
            "blockers": {
                "pods": [
                    {"labelSelector": {"matchLabels": {"app": "backup"}}, "scope": "Node"},
                    {"labelSelector": {"matchLabels": {"app": "migration"}}},
                ]
            }
        }
    )
    config = blocker_config(spec)
    assert [selector.label_selector for selector in config.node_pods] == ["app=backup"]
    assert [selector.label_selector for selector in config.pods] == ["app=migration"]


def test_the_plan_names_the_pod_that_holds_a_node() -> None:
    labels = {contract.REBOOT_REQUIRED_LABEL: contract.REBOOT_REQUIRED_VALUE}
    snapshot = ClusterSnapshot(
        windows=[
            {
                "kind": "NodesMaintenanceWindow",
                "metadata": {"name": "w"},
                "spec": {
                    "blockers": {"pods": [{"labelSelector": {}, "scope": "Node"}]},
                },
            }
        ],
        nodes=[
            {"metadata": {"name": name, "labels": labels}, "spec": {}, "status": {}}
            for name in ("a", "b")
        ],
    )
    why = {"a": "BlockingPods: pod db/backup on the node"}
    text = render(preview(snapshot, NOW, node_blockers=why))
    line = next(line for line in text.splitlines() if " a " in line)
    assert "NodeBlocked" in line and "db/backup" in line
    assert "pod selector" not in text  # scope Node is evaluated, not listed as unevaluated


def test_labels_move_from_before_to_after_as_kured_moves_them() -> None:
    spec = parse_window_spec(
        {
            "reboot": {
                "nodeLabels": {
                    "before": {"example.com/maintenance": "rebooting", "example.com/drained": "y"},
                    "after": {"example.com/maintenance": "done", "example.com/rebooted": "y"},
                }
            }
        }
    )
    assert node_updates.labels_on_admission(spec) == {
        "example.com/maintenance": "rebooting",
        "example.com/drained": "y",
        "example.com/rebooted": None,
    }
    assert node_updates.labels_on_release(spec, succeeded=True) == {
        "example.com/maintenance": "done",
        "example.com/drained": None,
        "example.com/rebooted": "y",
    }
    assert node_updates.labels_on_release(spec, succeeded=False) == {
        "example.com/maintenance": None,
        "example.com/drained": None,
    }


def test_the_cordon_patch_sets_labels_and_drops_any_pending_taint_key() -> None:
    node = NodeView(
        name="n",
        labels={"kubernetes.io/hostname": "n", "example.com/rebooted": "y"},
        taints=(Taint("example.com/soon", "true", "NoSchedule"), Taint("other", "", "NoExecute")),
    )
    operations = node_updates.cordon_operations(
        node,
        "w",
        False,
        {"example.com/maintenance": "rebooting", "example.com/rebooted": None, "absent": None},
        ("example.com/soon", "pitstop.dev/reboot-pending"),
    )
    # Only the pending taint goes, at its index, tested to still be there; "other" is untouched.
    assert operations[:2] == [
        {"op": "test", "path": "/spec/taints/0/key", "value": "example.com/soon"},
        {"op": "remove", "path": "/spec/taints/0"},
    ]
    assert not any(op["path"].startswith("/spec/taints/1") for op in operations)
    assert {
        "op": "add",
        "path": "/metadata/labels/example.com~1maintenance",
        "value": "rebooting",
    } in operations
    assert {"op": "remove", "path": "/metadata/labels/example.com~1rebooted"} in operations
    assert not any(op["path"].endswith("/absent") for op in operations)


def test_the_pending_taint_follows_the_window() -> None:
    default = parse_window_spec({})
    assert node_updates.pending_taint(default) == node_updates.PENDING_TAINT
    off = parse_window_spec({"reboot": {"pendingTaint": {"enabled": False}}})
    assert node_updates.pending_taint(off) is None
    assert node_updates.pending_taint_keys(off) == ("pitstop.dev/reboot-pending",)
    chosen = parse_window_spec({"reboot": {"pendingTaint": {"key": "example.com/soon"}}})
    assert node_updates.pending_taint(chosen) == Taint(
        "example.com/soon", "true", "PreferNoSchedule"
    )
    assert node_updates.pending_taint_keys(chosen) == (
        "example.com/soon",
        "pitstop.dev/reboot-pending",
    )


def test_the_plan_lists_the_next_patch_tuesday_openings() -> None:
    snapshot = ClusterSnapshot(
        windows=[
            {
                "kind": "NodesMaintenanceWindow",
                "metadata": {"name": "patch-tuesday"},
                "spec": {
                    "schedule": {
                        "timeZone": "Europe/Berlin",
                        "windows": [
                            {
                                "monthly": [{"weekday": "Tue", "nth": 2}],
                                "start": "22:00",
                                "end": "04:00",
                            }
                        ],
                    }
                },
            }
        ],
        nodes=[],
    )
    text = render(preview(snapshot, datetime(2026, 1, 1, tzinfo=UTC)))
    assert "closed; opens 2026-01-13 22:00 CET (2026-01-13T21:00:00Z)" in text
    assert (
        "next openings: 2026-01-13 22:00 CET (2026-01-13T21:00:00Z); 2026-02-10 22:00 CET"
        " (2026-02-10T21:00:00Z); 2026-03-10 22:00 CET (2026-03-10T21:00:00Z)"
    ) in text


def pod(name: str, owner: str | None, ready: bool, deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "ns"}
    if owner is not None:
        metadata["ownerReferences"] = [{"kind": owner, "name": "x", "controller": True}]
    if deleting:
        metadata["deletionTimestamp"] = "2025-06-04T12:00:00Z"
    status = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return {"metadata": metadata, "status": status}


def test_only_daemonset_pods_that_are_not_ready_hold_the_gate() -> None:
    pods = [
        pod("cni", "DaemonSet", ready=False),
        pod("logs", "DaemonSet", ready=True),
        pod("web", "ReplicaSet", ready=False),  # the drain's business, not this check's
        pod("bare", None, ready=False),
        pod("old-csi", "DaemonSet", ready=False, deleting=True),
    ]
    assert daemonset_pods_not_ready(pods) == ["ns/cni"]
    assert daemonset_pods_not_ready([pod("logs", "DaemonSet", ready=True)]) == []


# --- convert-kured: every kured flag is mapped or explained, and the README table agrees. -------

KNOWN_FLAGS = set(KURED_DEFAULTS) | set(HANDLED) | set(NO_EQUIVALENT)


def test_every_kured_flag_is_mapped_or_explained() -> None:
    assert set(HANDLED).isdisjoint(NO_EQUIVALENT)
    assert set(HANDLED) | set(NO_EQUIVALENT) == KNOWN_FLAGS
    # Every flag set to a non-default value is written into the window or explained in a note.
    for flag in sorted(NO_EQUIVALENT):
        value = "true" if flag in BOOLEAN_FLAGS else "something-else"
        notes = "\n".join(convert({flag: value}).notes)
        assert f"--{flag}" in notes, flag


def test_the_new_mappings_convert_into_a_window_pydantic_accepts() -> None:
    flags = parse_flag_list(
        [
            "--blocking-pod-selector=app=backup",
            "--pre-reboot-node-labels=example.com/maintenance=rebooting",
            "--pre-reboot-node-labels=example.com/drained=yes",
            "--post-reboot-node-labels=example.com/maintenance=done",
            "--prefer-no-schedule-taint=weave.works/kured-node-reboot",
            "--notify-url=slack://hook:T0001-B0002-XXXXXXXXXXXXXXXXXXXXXXXX@webhook?channel=ops",
            "--message-template-uncordon=Node %s is back ($5 well spent)",
        ]
    )
    result = convert(flags)
    spec = result.window["spec"]
    assert spec["blockers"]["pods"] == [
        {"labelSelector": {"matchLabels": {"app": "backup"}}, "scope": "Node"}
    ]
    assert spec["reboot"]["nodeLabels"] == {
        "before": {"example.com/maintenance": "rebooting", "example.com/drained": "yes"},
        "after": {"example.com/maintenance": "done"},
    }
    assert spec["reboot"]["pendingTaint"] == {
        "key": "weave.works/kured-node-reboot",
        "effect": "PreferNoSchedule",
    }
    assert spec["notify"]["body"] == "Node $node is back ($$5 well spent)"
    notes = "\n".join(result.notes)
    assert "--pre-reboot-node-labels example.com/drained: kured left these" in notes
    parsed = parse_window_spec(spec, "kured")
    assert parsed.notify is not None and parsed.notify.body == spec["notify"]["body"]


def test_the_readme_table_names_every_kured_flag() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("kured flag by flag")[1].split("\n\n")[1]
    named = set(re.findall(r"`--([a-z-]+)`", table.split("| --- | --- |")[1]))
    rows = [line for line in table.splitlines() if line.startswith("| `--")]
    first_column = set(re.findall(r"`--([a-z-]+)`", "\n".join(row.split(" | ")[0] for row in rows)))
    assert first_column == KNOWN_FLAGS, (KNOWN_FLAGS - first_column, first_column - KNOWN_FLAGS)
    assert named >= KNOWN_FLAGS
