"""A window's blockers, checked before a node is admitted: the spec mapped onto brain.blockers.

Results are kept for a short while per window, so passes that come in quick succession (every
node event wakes them) do not each ask Prometheus or list pods again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from brain.blockers import BlockerConfig, BlockerResult, first_blocker
from brain.blockers.pods import PodSelector
from brain.blockers.prometheus import PrometheusConfig
from brain.node_view import NodeView
from brain.window import WindowSpec

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
    pods = tuple(
        PodSelector.from_api(entry.model_dump(by_alias=True, exclude_none=True))
        for entry in blockers.pods
    )
    return BlockerConfig(
        prometheus=prometheus, pods=pods, node_annotations=tuple(blockers.node_annotations)
    )


@dataclass
class BlockerChecker:
    api_client: Any
    on_result: Callable[[str, BlockerResult], None] | None = None
    clock: Callable[[], float] = time.monotonic
    _cache: dict[str, tuple[float, BlockerConfig, BlockerResult]] = field(default_factory=dict)

    async def __call__(self, window: str, spec: WindowSpec, governed: list[NodeView]) -> str | None:
        """The reason the window is blocked ("Reason: message"), or None."""
        config = blocker_config(spec)
        if config.empty:
            result = BlockerResult(False, "", "")
        else:
            cached = self._cache.get(window)
            if (
                cached is not None
                and cached[1] == config
                and self.clock() - cached[0] < (RESULT_TTL_SECONDS)
            ):
                result = cached[2]
            else:
                annotations = {node.name: set(node.annotation_keys) for node in governed}
                result = await first_blocker(config, annotations, self.api_client)
                self._cache[window] = (self.clock(), config, result)
        if self.on_result is not None:
            self.on_result(window, result)
        return f"{result.reason}: {result.message}" if result.blocked else None
