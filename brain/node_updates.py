"""The brain's marks on a Node: the pending taint, phase annotations, and the final clean-up.

Taints are a list that a merge patch replaces whole, so taint changes are JSON patches that
first `test` the list they were computed from: a concurrent change by someone else makes the
patch fail (422) instead of being overwritten, and the next pass decides again.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes.client.exceptions import ApiException

from brain.kube import Kube
from brain.node_view import NodeView, Taint, node_view_from_object
from pitstop import contract

PENDING_TAINT = Taint(contract.PENDING_TAINT_KEY, "true", contract.PENDING_TAINT_EFFECT)
BRAIN_ANNOTATIONS = (
    contract.WINDOW_ANNOTATION,
    contract.KURED_REBOOT_IN_PROGRESS_ANNOTATION,
)
ACTION_ANNOTATIONS = (contract.ACTION_ANNOTATION, contract.ACTION_SINCE_ANNOTATION)


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
    """Add or remove the PreferNoSchedule pending taint; False if there was nothing to do.

    `node` may be a moment old (the node controller adds its own taint on cordon): when the
    patch's test fails (422), the node is read again and the patch made once more from that.
    """
    for attempt in range(3):
        if node.has_taint(PENDING_TAINT.key) == present:
            return False
        patch = taint_patch(
            node,
            add=PENDING_TAINT if present else None,
            remove=None if present else PENDING_TAINT.key,
        )
        try:
            await kube.call(kube.core.patch_node, node.name, patch)
            return True
        except ApiException as error:
            if error.status != 422 or attempt == 2:
                raise
            node = node_view_from_object(await read_node_raw(kube, node.name))
    return False


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


def cordon_operations(
    node: NodeView, window: str, kured_compatibility: bool
) -> list[dict[str, Any]]:
    """One JSON patch: cordon, say which window holds the node, drop the pending taint."""
    operations = (
        taint_patch(node, remove=PENDING_TAINT.key) if node.has_taint(PENDING_TAINT.key) else []
    )
    operations.append({"op": "add", "path": "/spec/unschedulable", "value": True})
    annotations = mark_patch(window, kured_compatibility)["metadata"]["annotations"]
    if node.annotation_keys:
        operations += [
            {"op": "add", "path": f"/metadata/annotations/{_escape(key)}", "value": value}
            for key, value in annotations.items()
        ]
    else:
        operations.append({"op": "add", "path": "/metadata/annotations", "value": annotations})
    return operations


async def cordon_and_mark(
    kube: Kube, node: NodeView, window: str, kured_compatibility: bool
) -> NodeView:
    """Cordon and mark the node in one request (re-read once if its taints moved meanwhile).

    Returns the Node as the patch left it: the caller checks the cordon there, not in memory.
    """
    for attempt in range(3):
        try:
            response = await kube.call(
                kube.core.patch_node,
                node.name,
                cordon_operations(node, window, kured_compatibility),
                _preload_content=False,
            )
            return node_view_from_object(json.loads(response.data))
        except ApiException as error:
            if error.status != 422 or attempt == 2:
                raise
            node = node_view_from_object(await read_node_raw(kube, node.name))
    raise AssertionError("unreachable")  # the loop returns or raises


def release_patch(uncordon: bool, clear_action: bool = False) -> dict[str, Any]:
    """Undo everything the brain put on a node, in one request."""
    annotations: dict[str, None] = {key: None for key in BRAIN_ANNOTATIONS}
    if clear_action:
        annotations.update(dict.fromkeys(ACTION_ANNOTATIONS))
    patch: dict[str, Any] = {"metadata": {"annotations": annotations}}
    if uncordon:
        patch["spec"] = {"unschedulable": None}
    return patch


async def merge_patch_node(kube: Kube, name: str, patch: dict[str, Any]) -> None:
    """A JSON merge patch (the client sends dict bodies as strategic merge for nodes)."""
    await kube.call(kube.core.patch_node, name, patch)


async def unmark_if_marked(kube: Kube, name: str, window: str, uncordon: bool) -> bool:
    """Remove our window mark (and the cordon) only if the node still carries that mark.

    For a cordon made for a lease that turned out gone: whoever finished the node removed the
    mark, so a node that has it again was marked by the stale step; one cordoned by anyone
    since, without our mark, is left alone (the `test` fails: 422).
    """
    mark = f"/metadata/annotations/{_escape(contract.WINDOW_ANNOTATION)}"
    operations: list[dict[str, Any]] = [
        {"op": "test", "path": mark, "value": window},
        {"op": "remove", "path": mark},
    ]
    if uncordon:
        operations.append({"op": "add", "path": "/spec/unschedulable", "value": False})
    try:
        await kube.call(kube.core.patch_node, name, operations)
    except ApiException as error:
        if error.status in (404, 422):
            return False
        raise
    return True


def clear_action_operations(node: NodeView) -> list[dict[str, Any]]:
    """Remove the action a person asked for, only if it is still the one we read."""
    path = f"/metadata/annotations/{_escape(contract.ACTION_ANNOTATION)}"
    operations: list[dict[str, Any]] = [
        {"op": "test", "path": path, "value": node.action},
        {"op": "remove", "path": path},
    ]
    if node.action_since:
        since_path = f"/metadata/annotations/{_escape(contract.ACTION_SINCE_ANNOTATION)}"
        operations += [
            {"op": "test", "path": since_path, "value": node.action_since},
            {"op": "remove", "path": since_path},
        ]
    return operations


async def clear_action(kube: Kube, node: NodeView) -> bool:
    """Remove the node's action annotations; False if a person wrote a new one meanwhile."""
    try:
        await kube.call(kube.core.patch_node, node.name, clear_action_operations(node))
    except ApiException as error:
        if error.status == 422:  # a `test` failed: a new action (or none): the next pass decides
            return False
        raise
    return True
