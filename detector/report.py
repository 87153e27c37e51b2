"""What the detector writes on its Node, and whether the Node already says it.

Pure functions, no I/O: the reconciler compares the wanted report with the last Node it saw and
sends one JSON merge patch when they differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pitstop import contract


@dataclass(frozen=True)
class NodeSnapshot:
    """The parts of a Node the detector cares about."""

    uid: str
    resource_version: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_object(cls, node: Mapping[str, Any]) -> NodeSnapshot:
        metadata = node.get("metadata") or {}
        return cls(
            uid=str(metadata.get("uid") or ""),
            resource_version=str(metadata.get("resourceVersion") or ""),
            labels=dict(metadata.get("labels") or {}),
            annotations=dict(metadata.get("annotations") or {}),
        )

    def is_older_than(self, other: NodeSnapshot) -> bool:
        """True when this is an earlier version of the same Node object than `other`.

        Resource versions are opaque, but etcd-backed servers use increasing integers; when
        they are not integers nothing is called older (a spare PATCH is harmless, a lost one
        is not).
        """
        if self.uid != other.uid:
            return False
        try:
            return int(self.resource_version) < int(other.resource_version)
        except ValueError:
            return False


@dataclass(frozen=True)
class Report:
    """The state to report: reboot required or not, why, and since when."""

    required: bool
    reason: str = ""
    since: str = ""


def rfc3339(moment: datetime) -> str:
    """UTC, whole seconds, `Z` suffix: the form Kubernetes itself writes."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def wanted_report(
    present: bool, reason: str, observed: NodeSnapshot | None, now: datetime
) -> Report:
    """The report for the file's state; keeps the Node's `since` if it already says required,
    so a restart or a changed reason does not reset when the need was first seen."""
    if not present:
        return Report(required=False)
    since = ""
    if observed is not None and _says_required(observed):
        since = observed.annotations.get(contract.REBOOT_REQUIRED_SINCE_ANNOTATION, "")
    return Report(required=True, reason=reason, since=since or rfc3339(now))


def _says_required(node: NodeSnapshot) -> bool:
    return node.labels.get(contract.REBOOT_REQUIRED_LABEL) == contract.REBOOT_REQUIRED_VALUE


def wanted_metadata(
    report: Report, kured_compatibility: bool
) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """(labels, annotations) to merge: a value to set, None to remove.

    The kured annotation is kured's "most recent reboot needed" time, so it is set with the
    report and left in place when the file goes away, as kured does.
    """
    if not report.required:
        return (
            {contract.REBOOT_REQUIRED_LABEL: None},
            {
                contract.REBOOT_REQUIRED_SINCE_ANNOTATION: None,
                contract.REBOOT_REASON_ANNOTATION: None,
            },
        )
    annotations: dict[str, str | None] = {
        contract.REBOOT_REQUIRED_SINCE_ANNOTATION: report.since,
        contract.REBOOT_REASON_ANNOTATION: report.reason or None,
    }
    if kured_compatibility:
        annotations[contract.KURED_REBOOT_NEEDED_ANNOTATION] = report.since
    return {contract.REBOOT_REQUIRED_LABEL: contract.REBOOT_REQUIRED_VALUE}, annotations


def patch_body(report: Report, kured_compatibility: bool) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that writes `report` on the Node."""
    labels, annotations = wanted_metadata(report, kured_compatibility)
    return {"metadata": {"labels": labels, "annotations": annotations}}


def node_matches(node: NodeSnapshot, report: Report, kured_compatibility: bool) -> bool:
    """Whether the Node already carries `report` (so no PATCH is needed).

    `since` is compared only for presence when a reboot is required: the Node's own value is
    the truth once written (see `wanted_report`).
    """
    labels, annotations = wanted_metadata(report, kured_compatibility)
    for key, value in labels.items():
        if node.labels.get(key) != value:
            return False
    for key, value in annotations.items():
        timestamp = key == contract.KURED_REBOOT_NEEDED_ANNOTATION or (
            key == contract.REBOOT_REQUIRED_SINCE_ANNOTATION and value is not None
        )
        if timestamp:
            if not node.annotations.get(key):
                return False
        elif node.annotations.get(key) != value:
            return False
    return True
