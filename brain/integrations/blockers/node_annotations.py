"""The node annotation blocker: a governed node carrying a listed annotation key holds the window.

Pure: the flow already indexes the nodes it governs, so it passes their annotation keys in and
this costs no API request.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Set

from brain.integrations.blockers.result import NOT_BLOCKED, BlockerResult, Reason, name_a_few


def check_node_annotations(
    keys: Collection[str], governed_node_annotations: Mapping[str, Set[str]]
) -> BlockerResult:
    """Blocked when any governed node carries any of `keys` (whatever the annotation's value).

    `governed_node_annotations` maps a node name to the set of its annotation keys.
    """
    wanted = set(keys)
    if not wanted:
        return NOT_BLOCKED
    hits = sorted(
        f"{node} ({', '.join(sorted(wanted & annotations))})"
        for node, annotations in governed_node_annotations.items()
        if wanted & annotations
    )
    if not hits:
        return NOT_BLOCKED
    noun = "node carries" if len(hits) == 1 else "nodes carry"
    return BlockerResult(
        blocked=True,
        reason=Reason.NODE_ANNOTATION,
        message=f"{len(hits)} {noun} a blocking annotation: {name_a_few(hits)}",
    )
