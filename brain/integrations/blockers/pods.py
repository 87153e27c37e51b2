"""The pod blocker: an unfinished pod that matches a window's selectors holds it back.

Scope Window (`check_pods`): a matching pod on any node holds the whole window (a batch job or a
migration that must not be interrupted, whichever node it runs on). Scope Node
(`check_pods_per_node`, kured's `--blocking-pod-selector`): a matching pod holds only the node
it runs on, and the window goes on with its other nodes; one list answers for every node.
Pods that have finished (Succeeded or Failed) never block. Pods are listed with a label selector
and a field selector, so the API server does the filtering: one list per selector, plus one
namespace list when a selector has a namespaceSelector.

The kubernetes client is synchronous; its calls run in threads so the event loop never waits.
A failed list blocks (reason PodCheckFailed): when we cannot tell, we do not reboot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from brain.core.window import PodBlocker
from brain.integrations.blockers.result import NOT_BLOCKED, BlockerResult, Reason, name_a_few
from brain.kube import JsonApi

# Finished pods never block; everything else (Pending, Running, Unknown) does.
UNFINISHED_PODS = "status.phase!=Succeeded,status.phase!=Failed"
# Enough to name a few and say "at least N"; the message does not need the exact count.
LIST_LIMIT = 100


@dataclass(frozen=True)
class PodSelector:
    """One entry of `spec.blockers.pods`, as label-selector text (the form the API takes,
    written by brain.core.selectors).

    `namespace_selector` None means every namespace; "" also matches every namespace.
    """

    label_selector: str
    namespace_selector: str | None = None

    @classmethod
    def from_spec(cls, blocker: PodBlocker) -> PodSelector:
        """From a window's `spec.blockers.pods` entry (its selectors written as API text)."""
        namespace_selector = blocker.namespace_selector
        return cls(
            label_selector=blocker.label_selector.selector.text(),
            namespace_selector=(
                None if namespace_selector is None else namespace_selector.selector.text()
            ),
        )

    def describe(self) -> str:
        where = (
            "any namespace"
            if not self.namespace_selector
            else f"namespaces matching {self.namespace_selector!r}"
        )
        return f"pods matching {self.label_selector or '(everything)'!r} in {where}"


def _matching_pods(
    api_client: client.ApiClient,
    selector: PodSelector,
    node_name: str | None,
    timeout_seconds: float,
    limit: int | None = LIST_LIMIT,
) -> tuple[list[tuple[str, str]], bool]:
    """(namespace/name, node name) of the unfinished pods matching; True when there are more."""
    api = JsonApi(api_client)
    namespaces: set[str] | None = None
    if selector.namespace_selector:
        listed = api.get(
            "/api/v1/namespaces",
            {"labelSelector": selector.namespace_selector},
            timeout=timeout_seconds,
        )
        namespaces = {item["metadata"]["name"] for item in listed.get("items") or ()}
        if not namespaces:
            return [], False
    field_selector = UNFINISHED_PODS + (f",spec.nodeName={node_name}" if node_name else "")
    query: dict[str, Any] = {
        "labelSelector": selector.label_selector or None,
        "fieldSelector": field_selector,
    }
    if limit is not None:
        query["limit"] = limit
    names: list[tuple[str, str]] = []
    more = False
    if namespaces is not None and len(namespaces) <= 3:
        # A few namespaces: ask each, so the API server does not scan every pod.
        for namespace in sorted(namespaces):
            pods = api.get(f"/api/v1/namespaces/{namespace}/pods", query, timeout=timeout_seconds)
            names += [
                (f"{namespace}/{pod['metadata']['name']}", _node_of(pod))
                for pod in pods.get("items") or ()
            ]
            more = more or _has_more(pods)
        return names, more
    pods = api.get("/api/v1/pods", query, timeout=timeout_seconds)
    names = [
        (f"{pod['metadata']['namespace']}/{pod['metadata']['name']}", _node_of(pod))
        for pod in pods.get("items") or ()
        if namespaces is None or pod["metadata"]["namespace"] in namespaces
    ]
    return names, _has_more(pods)


def _node_of(pod: dict[str, Any]) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


def _has_more(listed: dict[str, Any]) -> bool:
    return bool((listed.get("metadata") or {}).get("continue"))


async def check_pods(
    api_client: client.ApiClient,
    selectors: Sequence[PodSelector],
    node_name: str | None = None,
    timeout_seconds: float = 10.0,
) -> BlockerResult:
    """Blocked when any unfinished pod matches any selector (on `node_name` only, if given)."""
    found: list[str] = []
    more = False
    for selector in selectors:
        try:
            names, truncated = await asyncio.to_thread(
                _matching_pods, api_client, selector, node_name, timeout_seconds
            )
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            why = (
                f"HTTP {error.status} {error.reason}" if isinstance(error, ApiException) else error
            )
            return BlockerResult(
                blocked=True,
                reason=Reason.POD_CHECK_FAILED,
                message=f"cannot list {selector.describe()} ({why}); blocked until it can",
            )
        found += [name for name, _node in names if name not in found]
        more = more or truncated
    if not found:
        return NOT_BLOCKED
    count = f"at least {len(found)}" if more else str(len(found))
    noun = "pod blocks" if len(found) == 1 and not more else "pods block"
    return BlockerResult(
        blocked=True,
        reason=Reason.BLOCKING_PODS,
        message=f"{count} {noun} the window: {name_a_few(sorted(found))}",
    )


async def check_pods_per_node(
    api_client: client.ApiClient,
    selectors: Sequence[PodSelector],
    timeout_seconds: float = 10.0,
) -> tuple[BlockerResult, dict[str, BlockerResult]]:
    """Scope Node: per node, the unfinished matching pods on it (nodes without one are absent).

    Listed whole (no limit): a node left out of a truncated list would start under a pod that
    should hold it. A failed list holds the whole window (the first result), as `check_pods`.
    """
    per_node: dict[str, list[str]] = {}
    for selector in selectors:
        try:
            names, _more = await asyncio.to_thread(
                _matching_pods, api_client, selector, None, timeout_seconds, None
            )
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            why = (
                f"HTTP {error.status} {error.reason}" if isinstance(error, ApiException) else error
            )
            failed = BlockerResult(
                blocked=True,
                reason=Reason.POD_CHECK_FAILED,
                message=f"cannot list {selector.describe()} ({why}); blocked until it can",
            )
            return failed, {}
        for name, node in names:
            if node and name not in per_node.setdefault(node, []):
                per_node[node].append(name)
    results = {
        node: BlockerResult(
            blocked=True,
            reason=Reason.BLOCKING_PODS,
            message=(
                f"{'pod' if len(names) == 1 else 'pods'} {name_a_few(sorted(names))} on the node"
            ),
        )
        for node, names in sorted(per_node.items())
    }
    return NOT_BLOCKED, results
