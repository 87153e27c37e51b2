"""The brain's marks on a Node: the pending taint, phase annotations, a window's `nodeLabels`,
and the final clean-up.

Taints are a list that a merge patch replaces whole, so taint changes are JSON patches that
touch only our own entries: a taint is appended (`add /spec/taints/-`), and one is removed at
its index after a `test` that the index still holds its key. Others' taints are never
rewritten, and a change to them meanwhile does not fail the patch: the control plane adds and
removes its own taints all the time (`node.kubernetes.io/not-ready` on every new or rebooting
node), and a `test` of the whole list made 4,127 of 9,027 pending-taint PATCHes fail with 422
on 5,000 new nodes (issue 18). A patch that does fail (our entry moved, the list appeared or
went away, the taint is already there: 422) is made once more from a fresh read.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from brain.core.node_view import NodeView, Taint, node_view_from_object
from brain.core.window import WindowSpec
from brain.kube import Kube, node_path
from pitstop import contract

PENDING_TAINT = Taint(contract.PENDING_TAINT_KEY, "true", contract.PENDING_TAINT_EFFECT)
BRAIN_ANNOTATIONS = (
    contract.WINDOW_ANNOTATION,
    contract.KURED_REBOOT_IN_PROGRESS_ANNOTATION,
)
ACTION_ANNOTATIONS = (contract.ACTION_ANNOTATION, contract.ACTION_SINCE_ANNOTATION)


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def taint_operations(
    node: NodeView, add: Taint | None = None, remove: Collection[str] = ()
) -> list[dict[str, Any]]:
    """A JSON patch removing the taints with keys `remove` and appending `add`, from what `node`
    shows, touching no other taint (see the module's docstring)."""
    operations: list[dict[str, Any]] = []
    for index in reversed(range(len(node.taints))):
        key = node.taints[index].key
        if key in remove:
            operations += [
                {"op": "test", "path": f"/spec/taints/{index}/key", "value": key},
                {"op": "remove", "path": f"/spec/taints/{index}"},
            ]
    if add is not None:
        if node.taints:
            operations.append({"op": "add", "path": "/spec/taints/-", "value": add.as_dict()})
        else:
            # No list yet: made only if there still is none (a null `test` passes on a missing
            # member); one made meanwhile fails the test instead of being overwritten.
            operations += [
                {"op": "test", "path": "/spec/taints", "value": None},
                {"op": "add", "path": "/spec/taints", "value": [add.as_dict()]},
            ]
    return operations


def pending_taint(spec: WindowSpec) -> Taint | None:
    """The window's pending taint (`reboot.pendingTaint`), or None when it is switched off."""
    wanted = spec.reboot.pending_taint
    return Taint(wanted.key, "true", str(wanted.effect)) if wanted.enabled else None


def pending_taint_keys(spec: WindowSpec) -> tuple[str, ...]:
    """Keys taken off nodes that no longer wait: the window's, and the default one (a window
    that switched its taint off or renamed it leaves no stale default taint behind)."""
    return tuple(dict.fromkeys([spec.reboot.pending_taint.key, PENDING_TAINT.key]))


async def change_taints(
    kube: Kube, node: NodeView, add: Taint | None = None, remove: Collection[str] = ()
) -> bool:
    """Make the node carry `add` (by key) and none of the keys `remove`; False if it already
    did. `node` may be a moment old: on a 422 the node is read once more and the patch made
    again from that."""
    for attempt in range(2):
        needed_add = add if add is not None and not node.has_taint(add.key) else None
        needed_remove = [key for key in remove if node.has_taint(key)]
        if needed_add is None and not needed_remove:
            return False
        try:
            await kube.patch(
                node_path(node.name), taint_operations(node, needed_add, needed_remove)
            )
            return True
        except ApiException as error:
            if error.status != 422 or attempt == 1:
                raise
            node = node_view_from_object(await read_node_raw(kube, node.name))
    return False


async def set_pending_taint(
    kube: Kube, node: NodeView, present: bool, taint: Taint = PENDING_TAINT
) -> bool:
    """Add or remove a pending taint (by key); False if there was nothing to do."""
    if present:
        return await change_taints(kube, node, add=taint)
    return await change_taints(kube, node, remove=(taint.key,))


async def read_node_raw(kube: Kube, name: str) -> dict[str, Any]:
    """The Node exactly as the API serves it."""
    return dict(await kube.get(node_path(name)))


def mark_patch(window: str, kured_compatibility: bool) -> dict[str, Any]:
    """Who holds this node: `kubectl get node -o yaml` shows the window that took it."""
    annotations = {contract.WINDOW_ANNOTATION: window}
    if kured_compatibility:
        annotations[contract.KURED_REBOOT_IN_PROGRESS_ANNOTATION] = "true"
    return {"metadata": {"annotations": annotations}}


def cordon_operations(
    node: NodeView,
    window: str,
    kured_compatibility: bool,
    labels: Mapping[str, str | None] | None = None,
    pending_keys: Collection[str] = (PENDING_TAINT.key,),
) -> list[dict[str, Any]]:
    """One JSON patch: cordon, say which window holds the node, drop the pending taint, and
    set (a value) or remove (None) the window's `nodeLabels` as `labels_on_admission` says."""
    operations = taint_operations(node, remove=pending_keys)
    operations.append({"op": "add", "path": "/spec/unschedulable", "value": True})
    operations += label_operations(node, labels or {})
    annotations = mark_patch(window, kured_compatibility)["metadata"]["annotations"]
    if node.annotation_keys:
        operations += [
            {"op": "add", "path": f"/metadata/annotations/{_escape(key)}", "value": value}
            for key, value in annotations.items()
        ]
    else:
        operations.append({"op": "add", "path": "/metadata/annotations", "value": annotations})
    return operations


def label_operations(node: NodeView, labels: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """JSON patch operations setting (a value) or removing (None) labels, from what `node`
    shows: removing an absent label is no operation (a JSON patch would fail on it)."""
    operations: list[dict[str, Any]] = []
    wanted = {key: value for key, value in labels.items() if value is not None}
    if wanted and not node.labels:
        operations.append({"op": "add", "path": "/metadata/labels", "value": wanted})
    else:
        operations += [
            {"op": "add", "path": f"/metadata/labels/{_escape(key)}", "value": value}
            for key, value in wanted.items()
        ]
    operations += [
        {"op": "remove", "path": f"/metadata/labels/{_escape(key)}"}
        for key, value in labels.items()
        if value is None and key in node.labels
    ]
    return operations


def labels_on_admission(spec: WindowSpec) -> dict[str, str | None]:
    """`nodeLabels.before` set, and the `after` keys it does not set removed."""
    labels = spec.reboot.node_labels
    changes: dict[str, str | None] = {key: None for key in labels.after}
    changes.update(labels.before)
    return changes


def labels_on_release(spec: WindowSpec, succeeded: bool) -> dict[str, str | None]:
    """Back and healthy: `after` set, the `before` keys it does not set removed (kured sets its
    post-reboot labels at the uncordon). Given up: only the `before` labels removed."""
    labels = spec.reboot.node_labels
    changes: dict[str, str | None] = {key: None for key in labels.before}
    if succeeded:
        changes.update(labels.after)
    return changes


async def cordon_and_mark(
    kube: Kube,
    node: NodeView,
    window: str,
    kured_compatibility: bool,
    spec: WindowSpec | None = None,
) -> NodeView:
    """Cordon and mark the node in one request (re-read once if its taints moved meanwhile),
    with the window's nodeLabels.before and its pending taint dropped.

    Returns the Node as the patch left it: the caller checks the cordon there, not in memory.
    """
    labels = labels_on_admission(spec) if spec is not None else {}
    keys = pending_taint_keys(spec) if spec is not None else (PENDING_TAINT.key,)
    for attempt in range(3):
        try:
            patched = await kube.patch(
                node_path(node.name),
                cordon_operations(node, window, kured_compatibility, labels, keys),
            )
            return node_view_from_object(patched)
        except ApiException as error:
            if error.status != 422 or attempt == 2:
                raise
            node = node_view_from_object(await read_node_raw(kube, node.name))
    raise AssertionError("unreachable")  # the loop returns or raises


async def remove_pending_taints(kube: Kube, node: NodeView, spec: WindowSpec) -> None:
    await change_taints(kube, node, remove=pending_taint_keys(spec))


def release_patch(
    uncordon: bool, clear_action: bool = False, labels: Mapping[str, str | None] | None = None
) -> dict[str, Any]:
    """Undo everything the brain put on a node, in one request (and set `labels`, a merge
    patch: None removes)."""
    annotations: dict[str, None] = {key: None for key in BRAIN_ANNOTATIONS}
    if clear_action:
        annotations.update(dict.fromkeys(ACTION_ANNOTATIONS))
    patch: dict[str, Any] = {"metadata": {"annotations": annotations}}
    if labels:
        patch["metadata"]["labels"] = dict(labels)
    if uncordon:
        patch["spec"] = {"unschedulable": None}
    return patch


async def merge_patch_node(kube: Kube, name: str, patch: dict[str, Any]) -> None:
    """A merge patch (sent as a strategic merge patch, as for every built-in kind: `None`
    removes a key either way)."""
    await kube.patch(node_path(name), patch)


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
        await kube.patch(node_path(name), operations)
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
        await kube.patch(node_path(node.name), clear_action_operations(node))
    except ApiException as error:
        if error.status == 422:  # a `test` failed: a new action (or none): the next pass decides
            return False
        raise
    return True
