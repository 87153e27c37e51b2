"""Watch a rollout from outside: every version of the lock, and what it says at each moment.

The observer sees every write to the lock ConfigMap (a watch, not sampling), so the highest
number of nodes in maintenance it reports is exact: the safety invariants are checked on it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Self

from kubernetes import client, watch

IN_MAINTENANCE = {"Draining", "Rebooting", "WaitingForNode", "HealthCheck", "Failed"}


@dataclass
class LockSnapshot:
    """One version of the lock: its `nodes` (leases) and `windows` (completions, ...)."""

    at: float
    leases: dict[str, dict[str, object]]
    windows: dict[str, dict[str, object]] = field(default_factory=dict)

    def in_maintenance(self, window: str | None = None) -> list[str]:
        return sorted(
            name
            for name, lease in self.leases.items()
            if lease.get("phase") in IN_MAINTENANCE
            and (window is None or lease.get("window") == window)
        )


@dataclass(kw_only=True)
class BackgroundWatch:
    """A watch loop in a daemon thread, started and stopped as a context manager.

    Subclasses implement `_watch`, looping until `_stop` is set.
    """

    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._watch, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _watch(self) -> None:
        raise NotImplementedError


@dataclass
class LockObserver(BackgroundWatch):
    api_client: client.ApiClient
    namespace: str
    name: str = "pitstop-lock"
    zones: dict[str, str] = field(default_factory=dict)  # node -> zone, for per-zone peaks
    snapshots: list[LockSnapshot] = field(default_factory=list)

    def _watch(self) -> None:
        core = client.CoreV1Api(self.api_client)
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    core.list_namespaced_config_map,
                    self.namespace,
                    field_selector=f"metadata.name={self.name}",
                    timeout_seconds=2,
                ):
                    data = (event["object"].data or {}).get("state.json") or "{}"
                    state = json.loads(data)
                    self.snapshots.append(
                        LockSnapshot(
                            time.monotonic(), state.get("nodes") or {}, state.get("windows") or {}
                        )
                    )
                    if self._stop.is_set():
                        break
            except Exception:
                time.sleep(0.2)
            finally:
                stream.stop()

    def peak(self, window: str | None = None) -> int:
        return max((len(s.in_maintenance(window)) for s in self.snapshots), default=0)

    def peak_per_zone(self) -> int:
        peak = 0
        for snapshot in self.snapshots:
            zones = Counter(self.zones.get(node, "") for node in snapshot.in_maintenance())
            peak = max(peak, max(zones.values(), default=0))
        return peak

    def ever_in_maintenance(self) -> set[str]:
        return {name for snapshot in self.snapshots for name in snapshot.in_maintenance()}
