"""Blockers: outside conditions that hold a whole window back before a node is admitted.

Each blocker answers one question ("is it safe to start a node now?") with a `BlockerResult`.
The flow maps a window's `spec.blockers` onto a `BlockerConfig` and calls `first_blocker` on
each pass; the reason goes into the window's `Blocked` condition and the
`pitstop_window_blocked{window,reason}` metric, the message into the condition's message.

Blockers are checked cheapest first (node annotations: no I/O; pods: the Kubernetes API;
Prometheus: an outside HTTP server), so a window blocked by an annotation costs no requests.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any

from brain.integrations.blockers.node_annotations import check_node_annotations
from brain.integrations.blockers.pods import (
    PodSelector,
    check_pods,
    check_pods_per_node,
)
from brain.integrations.blockers.prometheus import PrometheusConfig, check_prometheus
from brain.integrations.blockers.result import NOT_BLOCKED, BlockerResult, Reason

__all__ = [
    "NOT_BLOCKED",
    "BlockerConfig",
    "BlockerResult",
    "PodSelector",
    "PrometheusConfig",
    "Reason",
    "all_blockers",
    "check_node_annotations",
    "check_pods",
    "check_pods_per_node",
    "check_prometheus",
    "first_blocker",
]


@dataclass(frozen=True)
class BlockerConfig:
    """The blockers of one window (`spec.blockers`), in plain types the flow fills in."""

    prometheus: PrometheusConfig | None = None
    pods: tuple[PodSelector, ...] = ()  # scope Window: hold the whole window
    node_pods: tuple[PodSelector, ...] = ()  # scope Node: hold only the node they run on
    node_annotations: tuple[str, ...] = ()
    # Upper bound for each outside call (Prometheus); the flow's pass never waits longer.
    timeout_seconds: float = 10.0

    @property
    def empty(self) -> bool:
        return (
            self.prometheus is None
            and not self.pods
            and not self.node_pods
            and not self.node_annotations
        )


async def all_blockers(
    config: BlockerConfig,
    governed_node_annotations: Mapping[str, Set[str]],
    api_client: Any | None = None,
    stop_at_first: bool = False,
) -> list[BlockerResult]:
    """Every blocking result of the window, cheapest check first (empty list = not blocked).

    `governed_node_annotations` maps each node the window governs to its annotation keys.
    `api_client` (a kubernetes.client.ApiClient) is only needed when `config.pods` is set.
    """
    results: list[BlockerResult] = []

    def blocked(result: BlockerResult) -> bool:
        if result.blocked:
            results.append(result)
        return result.blocked and stop_at_first

    if config.node_annotations and blocked(
        check_node_annotations(config.node_annotations, governed_node_annotations)
    ):
        return results
    if config.pods:
        if api_client is None:
            raise ValueError("the pod blocker needs a Kubernetes api_client")
        if blocked(await check_pods(api_client, config.pods)):
            return results
    if config.prometheus is not None:
        blocked(await check_prometheus(config.prometheus, timeout_seconds=config.timeout_seconds))
    return results


async def first_blocker(
    config: BlockerConfig,
    governed_node_annotations: Mapping[str, Set[str]],
    api_client: Any | None = None,
) -> BlockerResult:
    """The first blocking result (cheapest check first), or NOT_BLOCKED."""
    results = await all_blockers(
        config, governed_node_annotations, api_client=api_client, stop_at_first=True
    )
    return results[0] if results else NOT_BLOCKED
