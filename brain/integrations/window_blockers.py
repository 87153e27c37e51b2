"""A window's blockers, checked before a node is admitted: the spec mapped onto `blockers/`.

Results are kept for a short while per window, so passes that come in quick succession (every
node event wakes them) do not each ask Prometheus or list pods again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from brain.core.node_view import NodeView
from brain.core.window import PodBlockerScope, WindowSpec
from brain.integrations.blockers import (
    NOT_BLOCKED,
    BlockerConfig,
    BlockerResult,
    check_pods_per_node,
    first_blocker,
)
from brain.integrations.blockers.pods import PodSelector
from brain.integrations.blockers.prometheus import PrometheusConfig

RESULT_TTL_SECONDS = 10.0


def blocker_config(spec: WindowSpec) -> BlockerConfig:
    blockers = spec.blockers
    prometheus = None
    if blockers.prometheus is not None:
        prometheus = PrometheusConfig(
            url=blockers.prometheus.url,
            alert_filter=blockers.prometheus.alert_filter,
            filter_match_only=blockers.prometheus.filter_match_only,
            firing_only=blockers.prometheus.firing_only,
        )

    def pods(scope: PodBlockerScope) -> tuple[PodSelector, ...]:
        return tuple(
            PodSelector.from_spec(entry) for entry in blockers.pods if entry.scope is scope
        )

    return BlockerConfig(
        prometheus=prometheus,
        pods=pods(PodBlockerScope.WINDOW),
        node_pods=pods(PodBlockerScope.NODE),
        node_annotations=tuple(blockers.node_annotations),
    )


@dataclass(frozen=True)
class BlockerVerdict:
    """What holds a window back: the whole of it ("Reason: message"), or some of its nodes."""

    window: str | None = None
    nodes: Mapping[str, str] = field(default_factory=dict)  # node -> "Reason: message"


def _reason_text(result: BlockerResult) -> str | None:
    return f"{result.reason}: {result.message}" if result.blocked else None


async def node_blockers(
    config: BlockerConfig, api_client: Any
) -> tuple[BlockerResult, dict[str, str]]:
    """Scope Node pod blockers: a failed list (holds the window) and node -> reason."""
    if not config.node_pods:
        return NOT_BLOCKED, {}
    failed, per_node = await check_pods_per_node(
        api_client, config.node_pods, timeout_seconds=config.timeout_seconds
    )
    return failed, {node: f"{result.reason}: {result.message}" for node, result in per_node.items()}


@dataclass
class BlockerChecker:
    api_client: Any
    on_result: Callable[[str, BlockerResult], None] | None = None
    clock: Callable[[], float] = time.monotonic
    _cache: dict[str, tuple[float, BlockerConfig, BlockerResult, dict[str, str]]] = field(
        default_factory=dict
    )

    async def __call__(
        self, window: str, spec: WindowSpec, governed: list[NodeView]
    ) -> BlockerVerdict:
        """What holds the window (or some of its nodes) back now."""
        config = blocker_config(spec)
        per_node: dict[str, str] = {}
        if config.empty:
            result = BlockerResult(False, "", "")
        else:
            cached = self._cache.get(window)
            if (
                cached is not None
                and cached[1] == config
                and self.clock() - cached[0] < (RESULT_TTL_SECONDS)
            ):
                result, per_node = cached[2], cached[3]
            else:
                annotations = {node.name: set(node.annotation_keys) for node in governed}
                result = await first_blocker(config, annotations, self.api_client)
                if not result.blocked:
                    result, per_node = await node_blockers(config, self.api_client)
                self._cache[window] = (self.clock(), config, result, per_node)
        if self.on_result is not None:
            self.on_result(window, result)
        governed_names = {node.name for node in governed}
        return BlockerVerdict(
            window=_reason_text(result),
            nodes={node: why for node, why in per_node.items() if node in governed_names},
        )
