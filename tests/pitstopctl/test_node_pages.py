"""`pitstop plan` decodes Node pages into only what a NodeView reads: the views (and so the plan)
must be the same as from the whole objects."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from brain.core.node_view import NodeView, node_view_from_object
from pitstop import contract
from pitstopctl.node_pages import decode_node_page


def page(items: Any, token: str | None = None) -> bytes:
    metadata: dict[str, Any] = {"resourceVersion": "7"}
    if token is not None:
        metadata["continue"] = token
    body = {"kind": "NodeList", "apiVersion": "v1", "metadata": metadata, "items": items}
    return json.dumps(body).encode()


def full_node() -> dict[str, Any]:
    """A Node whose view has no field at its default (and much a view does not read)."""
    return {
        "metadata": {
            "name": "node-1",
            "uid": "0f4a",
            "resourceVersion": "42",
            "creationTimestamp": "2025-06-01T10:00:00Z",
            "labels": {
                contract.REBOOT_REQUIRED_LABEL: contract.REBOOT_REQUIRED_VALUE,
                "topology.kubernetes.io/zone": "a",
            },
            "annotations": {
                contract.REBOOT_REQUIRED_SINCE_ANNOTATION: "2025-06-01T09:00:00Z",
                contract.REBOOT_REASON_ANNOTATION: "kernel",
                contract.PRIORITY_ANNOTATION: "5",
                contract.EMERGENCY_ANNOTATION: contract.EMERGENCY_VALUE,
                contract.ACTION_ANNOTATION: contract.ACTION_RETRY,
                contract.ACTION_SINCE_ANNOTATION: "2025-06-01T11:00:00Z",
            },
            "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}],
        },
        "spec": {
            "unschedulable": True,
            "podCIDR": "10.0.0.0/24",
            "taints": [
                {
                    "key": contract.NOT_READY_TAINT_KEY,
                    "effect": "NoExecute",
                    "timeAdded": "2025-06-01T11:00:00Z",
                },
                {"key": "dedicated", "value": "db", "effect": "NoSchedule"},
            ],
        },
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasMemory"},
                {"type": "Ready", "status": "False", "message": "kubelet stopped posting"},
            ],
            "nodeInfo": {"bootID": "boot-1", "kernelVersion": "6.1"},
            "images": [{"names": ["registry/app:1"], "sizeBytes": 1000}],
        },
    }


def test_a_view_from_the_decoded_page_is_the_view_from_the_whole_node() -> None:
    node = full_node()
    decoded, token = decode_node_page(page([node]))
    assert token == ""
    view = node_view_from_object(decoded[0])
    assert view == node_view_from_object(node)
    # Every field of the view is set here (none at its default), so a field added to NodeView
    # fails this test until full_node sets it and node_pages keeps what it is read from.
    defaults = NodeView(name="")
    unset = [
        field.name
        for field in dataclasses.fields(NodeView)
        if getattr(view, field.name) == getattr(defaults, field.name)
        and field.name != "since_ignored"  # set by believable_since, not from the object
    ]
    assert unset == []


def test_what_a_view_does_not_read_is_left_out() -> None:
    decoded, _ = decode_node_page(page([full_node()]))
    assert "managedFields" not in decoded[0]["metadata"]
    assert "images" not in decoded[0]["status"]
    assert decoded[0]["status"]["conditions"][0] == {"type": "MemoryPressure", "status": "False"}


def test_the_next_page_token_and_an_empty_page() -> None:
    assert decode_node_page(page([full_node()], token="abc"))[1] == "abc"
    assert decode_node_page(page([], token=""))[1] == ""
    assert decode_node_page(page(None)) == ([], "")
    assert decode_node_page(b'{"kind": "NodeList"}') == ([], "")


def test_missing_and_null_parts_give_the_same_views() -> None:
    nodes: list[dict[str, Any]] = [
        {"metadata": {"name": "bare"}},
        {"metadata": {"name": "nulls", "labels": None, "annotations": None}, "spec": None},
        {"metadata": {"name": "no-status"}, "status": None},
        {"metadata": {"name": "empty-status"}, "status": {"conditions": None, "nodeInfo": None}},
        {"metadata": {"name": "ready"}, "status": {"conditions": [{"type": "Ready"}]}},
        {"metadata": None},
        {},
    ]
    decoded, _ = decode_node_page(page(nodes))
    assert [node_view_from_object(node) for node in decoded] == [
        node_view_from_object(node) for node in nodes
    ]


texts = st.text(max_size=8)
flag_keys = st.sampled_from(
    [
        contract.REBOOT_REQUIRED_LABEL,
        contract.REBOOT_REQUIRED_SINCE_ANNOTATION,
        contract.REBOOT_REASON_ANNOTATION,
        contract.PRIORITY_ANNOTATION,
        contract.EMERGENCY_ANNOTATION,
        contract.ACTION_ANNOTATION,
        contract.ACTION_SINCE_ANNOTATION,
    ]
)
string_maps = st.dictionaries(st.one_of(flag_keys, texts), st.one_of(texts, st.just("true")))
conditions = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["Ready", "DiskPressure"]),
        "status": st.sampled_from(["True", "False"]),
    },
    optional={"reason": texts, "lastHeartbeatTime": texts},
)
taints = st.fixed_dictionaries(
    {"key": texts, "effect": st.sampled_from(["NoSchedule", "NoExecute"])},
    optional={"value": texts, "timeAdded": texts},
)
nodes = st.fixed_dictionaries(
    {"metadata": st.fixed_dictionaries({"name": texts}, optional={"labels": string_maps})},
    optional={
        "spec": st.fixed_dictionaries(
            {}, optional={"unschedulable": st.booleans(), "taints": st.lists(taints, max_size=3)}
        ),
        "status": st.fixed_dictionaries(
            {},
            optional={
                "conditions": st.lists(conditions, max_size=4),
                "nodeInfo": st.fixed_dictionaries({}, optional={"bootID": texts}),
                "phase": texts,
            },
        ),
    },
)


@given(st.lists(nodes, max_size=5), string_maps, st.one_of(st.none(), texts))
@settings(max_examples=200)
def test_random_nodes_give_the_same_views(
    items: list[dict[str, Any]], annotations: dict[str, str], token: str | None
) -> None:
    for node in items:
        node["metadata"]["annotations"] = annotations
        node["metadata"]["creationTimestamp"] = "2025-06-01T10:00:00Z"
    decoded, next_token = decode_node_page(page(items, token))
    assert next_token == (token or "")
    assert [node_view_from_object(node) for node in decoded] == [
        node_view_from_object(node) for node in items
    ]
