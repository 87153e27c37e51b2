"""A page of the Node list, decoded into only what a NodeView is built from.

`pitstop plan` reads every Node: at 5,000 kwok Nodes that is 20 MB of JSON (real Nodes, with
their images and managedFields, are larger), and json.loads of it was the CLI's largest cost
(0.4-0.5 s here). pydantic-core (already loaded for the lock's models) parses the same bytes
against a schema of the few fields `brain.core.node_view.node_view_from_object` reads and
skips the rest without making Python objects of it: about a third of the time. What it keeps
is the API's JSON unchanged (the same keys and values, plain dicts and lists), so the views and
the plan are the same as from the whole objects; a field a view reads must be listed here.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic_core import SchemaValidator, core_schema


def _object(**fields: core_schema.CoreSchema) -> core_schema.CoreSchema:
    """A JSON object (or null) of which only `fields` are kept, each optional."""
    return core_schema.nullable_schema(
        core_schema.typed_dict_schema(
            {
                name: core_schema.typed_dict_field(schema, required=False)
                for name, schema in fields.items()
            },
            extra_behavior="ignore",
        )
    )


def _list(item: core_schema.CoreSchema) -> core_schema.CoreSchema:
    return core_schema.nullable_schema(core_schema.list_schema(item))


@cache
def _page_validator() -> SchemaValidator:
    kept = core_schema.any_schema()  # kept whole, as json.loads makes it
    node = _object(
        metadata=_object(
            name=kept, uid=kept, creationTimestamp=kept, labels=kept, annotations=kept
        ),
        spec=_object(unschedulable=kept, taints=kept),
        status=_object(
            conditions=_list(_object(type=kept, status=kept)),
            nodeInfo=_object(bootID=kept),
        ),
    )
    # `continue` is a Python keyword: the fields are given as a dict.
    page = _object(**{"metadata": _object(**{"continue": kept}), "items": _list(node)})
    return SchemaValidator(page)


def decode_node_page(body: bytes) -> tuple[list[dict[str, Any]], str]:
    """The Nodes of one page of `GET /api/v1/nodes` (each cut down to what a view reads) and
    the token of the next page ("" on the last one)."""
    page = _page_validator().validate_json(body) or {}
    token = (page.get("metadata") or {}).get("continue") or ""
    return list(page.get("items") or ()), str(token)
