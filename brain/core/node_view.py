"""What the brain knows of a Node: a small, immutable view built from the Node object.

The Node watch (brain/node_watch.py) keeps these (never whole Node objects), and the planner
decides from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pitstop import contract


@dataclass(frozen=True)
class Taint:
    key: str
    value: str = ""
    effect: str = ""
    time_added: str = ""  # kept as the API has it: a JSON patch `test` compares exactly

    def as_dict(self) -> dict[str, str]:
        taint = {"key": self.key, "effect": self.effect}
        if self.value:
            taint["value"] = self.value
        if self.time_added:
            taint["timeAdded"] = self.time_added
        return taint


@dataclass(frozen=True)
class NodeView:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    reboot_required: bool = False
    reboot_required_since: datetime | None = None
    reboot_reason: str = ""
    priority: int = 0
    emergency: bool = False
    unschedulable: bool = False
    ready: bool = True
    boot_id: str = ""
    # Annotation keys present on the node (for nodeAnnotations blockers); values are not kept.
    annotation_keys: frozenset[str] = frozenset()
    action: str = ""  # contract.ACTION_ANNOTATION value, if any
    action_since: str = ""  # contract.ACTION_SINCE_ANNOTATION value, if any
    uid: str = ""
    taints: tuple[Taint, ...] = ()
    created: datetime | None = None  # metadata.creationTimestamp
    # Why reboot_required_since was set aside (see believable_since); "" if it was not.
    since_ignored: str = ""

    def has_taint(self, key: str) -> bool:
        return any(taint.key == key for taint in self.taints)

    @property
    def not_ready_taint_keys(self) -> tuple[str, ...]:
        """The control plane's not-ready/unreachable taints on the node (any effect), by key."""
        return tuple(
            sorted(
                {
                    taint.key
                    for taint in self.taints
                    if taint.key in contract.CONTROL_PLANE_NOT_READY_TAINT_KEYS
                }
            )
        )


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


FLAG_TIME_SKEW = timedelta(seconds=contract.REBOOT_REQUIRED_SINCE_SKEW_SECONDS)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def believable_since(node: NodeView, now: datetime) -> NodeView:
    """The node without its reboot-required-since if that lies before the node's creation or
    after now (give or take FLAG_TIME_SKEW), with why in `since_ignored`.

    The flag time orders the queue (oldest first) and tells a flag raised after the node's last
    reboot from one raised before it. The detector's policy refuses a time before the node's
    creation, but CEL has no clock: a time in the future (or one written before the policy) is
    only caught here. Set aside, the node goes last in its queue and, at the boot it was
    rebooted to, rests until its detector flags it anew.
    """
    since = node.reboot_required_since
    if since is None:
        return node
    since = _aware(since)
    if since > now + FLAG_TIME_SKEW:
        why = "in the future"
    elif node.created is not None and since < _aware(node.created) - FLAG_TIME_SKEW:
        why = "before the node was created"
    else:
        return node
    stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return replace(
        node,
        reboot_required_since=None,
        since_ignored=f"reboot-required-since {stamp} ignored: {why}",
    )


def _parse_int(value: str | None) -> int:
    try:
        return int(value) if value else 0
    except ValueError:
        return 0


def node_view_from_object(node: Mapping[str, Any]) -> NodeView:
    """Build a NodeView from a Node as a plain dict (the shape kopf and the API return)."""
    metadata = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    labels: dict[str, str] = dict(metadata.get("labels") or {})
    annotations: dict[str, str] = dict(metadata.get("annotations") or {})
    ready = False
    for condition in status.get("conditions") or []:
        if condition.get("type") == contract.READY_CONDITION:
            ready = condition.get("status") == "True"
    return NodeView(
        name=str(metadata.get("name", "")),
        labels=labels,
        reboot_required=labels.get(contract.REBOOT_REQUIRED_LABEL)
        == contract.REBOOT_REQUIRED_VALUE,
        reboot_required_since=_parse_time(
            annotations.get(contract.REBOOT_REQUIRED_SINCE_ANNOTATION)
        ),
        reboot_reason=annotations.get(contract.REBOOT_REASON_ANNOTATION, ""),
        priority=_parse_int(annotations.get(contract.PRIORITY_ANNOTATION)),
        emergency=annotations.get(contract.EMERGENCY_ANNOTATION) == contract.EMERGENCY_VALUE,
        unschedulable=bool(spec.get("unschedulable")),
        ready=ready,
        boot_id=str((status.get("nodeInfo") or {}).get("bootID") or ""),
        annotation_keys=frozenset(annotations),
        action=annotations.get(contract.ACTION_ANNOTATION, ""),
        action_since=annotations.get(contract.ACTION_SINCE_ANNOTATION, ""),
        uid=str(metadata.get("uid", "")),
        created=_parse_time(metadata.get("creationTimestamp")),
        taints=tuple(
            Taint(
                str(taint.get("key", "")),
                str(taint.get("value") or ""),
                str(taint.get("effect", "")),
                str(taint.get("timeAdded") or ""),
            )
            for taint in spec.get("taints") or []
        ),
    )
