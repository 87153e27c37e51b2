"""The brain's marks on a Node: the pending taint, phase annotations, and the final clean-up.

Taints are a list that a merge patch replaces whole, so taint changes are JSON patches that
first `test` the list they were computed from: a concurrent change by someone else makes the
patch fail (422) instead of being overwritten, and the next pass decides again.
"""

from __future__ import annotations

import json
from typing import Any

from brain.kube import Kube
from brain.node_view import NodeView, Taint
from pitstop import contract

PENDING_TAINT = Taint(contract.PENDING_TAINT_KEY, "true", contract.PENDING_TAINT_EFFECT)
BRAIN_ANNOTATIONS = (
    contract.WINDOW_ANNOTATION,
    contract.KURED_REBOOT_IN_PROGRESS_ANNOTATION,
)


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def taint_patch(
    node: NodeView, add: Taint | None = None, remove: str | None = None
) -> list[dict[str, Any]]:
    """A JSON patch that changes the node's taints only if they are still what we saw."""
    current = [taint.as_dict() for taint in node.taints]
    wanted = [taint for taint in node.taints if taint.key not in {remove, add and add.key}]
    if add is not None:
        wanted.append(add)
    operations: list[dict[str, Any]] = []
    if current:
        operations.append({"op": "test", "path": "/spec/taints", "value": current})
        operations.append(
            {"op": "replace", "path": "/spec/taints", "value": [t.as_dict() for t in wanted]}
        )
    else:
        operations.append(
            {"op": "add", "path": "/spec/taints", "value": [t.as_dict() for t in wanted]}
        )
    return operations


async def set_pending_taint(kube: Kube, node: NodeView, present: bool) -> bool:
    """Add or remove the PreferNoSchedule pending taint; False if there was nothing to do."""
    if node.has_taint(PENDING_TAINT.key) == present:
        return False
    patch = taint_patch(
        node, add=PENDING_TAINT if present else None, remove=None if present else PENDING_TAINT.key
    )
    await kube.call(kube.core.patch_node, node.name, patch)
    return True


async def read_node_raw(kube: Kube, name: str) -> dict[str, Any]:
    """The Node exactly as the API serves it (timestamps untouched by the client's models)."""
    response = await kube.call(kube.core.read_node, name, _preload_content=False)
    return dict(json.loads(response.data))


def mark_patch(window: str, kured_compatibility: bool) -> dict[str, Any]:
    """Who holds this node: `kubectl get node -o yaml` shows the window that took it."""
    annotations = {contract.WINDOW_ANNOTATION: window}
    if kured_compatibility:
        annotations[contract.KURED_REBOOT_IN_PROGRESS_ANNOTATION] = "true"
    return {"metadata": {"annotations": annotations}}


def cordon_patch(window: str, kured_compatibility: bool) -> dict[str, Any]:
    patch = mark_patch(window, kured_compatibility)
    patch["spec"] = {"unschedulable": True}
    return patch


def release_patch(uncordon: bool, clear_action: bool = False) -> dict[str, Any]:
    """Undo everything the brain put on a node, in one request."""
    annotations: dict[str, None] = {key: None for key in BRAIN_ANNOTATIONS}
    if clear_action:
        annotations[contract.ACTION_ANNOTATION] = None
    patch: dict[str, Any] = {"metadata": {"annotations": annotations}}
    if uncordon:
        patch["spec"] = {"unschedulable": None}
    return patch


async def merge_patch_node(kube: Kube, name: str, patch: dict[str, Any]) -> None:
    """A JSON merge patch (the client sends dict bodies as strategic merge for nodes)."""
    await kube.call(kube.core.patch_node, name, patch)


async def clear_action(kube: Kube, name: str) -> None:
    await merge_patch_node(
        kube, name, {"metadata": {"annotations": {contract.ACTION_ANNOTATION: None}}}
    )
