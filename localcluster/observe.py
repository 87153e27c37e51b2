"""Watch a rollout from outside: every version of the lock, and what it says at each moment.

The observer sees every write to the lock ConfigMap (a watch, not sampling), so the highest
number of nodes in maintenance it reports is exact: the safety invariants are checked on it.
NodeHistory and PodBindings do the same for Nodes (cordon, readiness, the control plane's
not-ready taints) and for where pods are bound, and when.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from brain.core.api import DEFAULT_LOCK_NAME
from pitstop import contract

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
    name: str = DEFAULT_LOCK_NAME
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


def _resumed_watch(
    stop: threading.Event, list_call: Callable[..., Any], seen: Callable[[Any], None], **query: Any
) -> None:
    """Watch until `stop`, resuming from the last resourceVersion when the server ends the
    watch: every change is seen, once and in order (only a 410 makes it list anew)."""
    version = ""
    while not stop.is_set():
        stream = watch.Watch()
        try:
            extra = {"resource_version": version} if version else {}
            for event in stream.stream(list_call, timeout_seconds=2, **query, **extra):
                seen(event["object"])
                version = event["object"].metadata.resource_version
                if stop.is_set():
                    break
        except ApiException as error:
            if error.status == 410:
                version = ""
            time.sleep(0.2)
        except Exception:
            time.sleep(0.2)
        finally:
            stream.stop()


@dataclass(frozen=True)
class NodeVersion:
    at: float  # time.monotonic() when seen
    name: str
    unschedulable: bool
    ready: bool
    boot_id: str
    not_ready_taints: tuple[str, ...]  # "key:effect"


@dataclass
class NodeHistory(BackgroundWatch):
    """Every version of the Nodes matching `label_selector`, as seen by a watch."""

    api_client: client.ApiClient
    label_selector: str
    versions: list[NodeVersion] = field(default_factory=list)

    def _watch(self) -> None:
        _resumed_watch(
            self._stop,
            client.CoreV1Api(self.api_client).list_node,
            self._seen,
            label_selector=self.label_selector,
        )

    def _seen(self, node: Any) -> None:
        ready = any(
            condition.type == "Ready" and condition.status == "True"
            for condition in node.status.conditions or []
        )
        taints = tuple(
            f"{taint.key}:{taint.effect}"
            for taint in node.spec.taints or []
            if taint.key in contract.CONTROL_PLANE_NOT_READY_TAINT_KEYS
        )
        self.versions.append(
            NodeVersion(
                time.monotonic(),
                node.metadata.name,
                bool(node.spec.unschedulable),
                ready,
                str((node.status.node_info and node.status.node_info.boot_id) or ""),
                taints,
            )
        )

    def of(self, name: str) -> list[NodeVersion]:
        return [version for version in self.versions if version.name == name]

    def at(self, name: str, moment: float) -> NodeVersion | None:
        """The node as last seen at `moment`."""
        seen = [version for version in self.of(name) if version.at <= moment]
        return seen[-1] if seen else None


@dataclass(frozen=True)
class PodBinding:
    at: float  # time.monotonic() when the pod was first seen bound
    pod: str
    node: str
    owner_kind: str


@dataclass
class PodBindings(BackgroundWatch):
    """When each pod of `namespace` was bound to a node, as seen by a watch."""

    api_client: client.ApiClient
    namespace: str
    bindings: list[PodBinding] = field(default_factory=list)
    _bound: set[str] = field(default_factory=set)

    def _watch(self) -> None:
        _resumed_watch(
            self._stop,
            client.CoreV1Api(self.api_client).list_namespaced_pod,
            self._seen,
            namespace=self.namespace,
        )

    def _seen(self, pod: Any) -> None:
        uid, node = pod.metadata.uid, pod.spec.node_name
        if not node or uid in self._bound:
            return
        self._bound.add(uid)
        owners = [owner.kind for owner in pod.metadata.owner_references or [] if owner.controller]
        self.bindings.append(
            PodBinding(time.monotonic(), pod.metadata.name, node, owners[0] if owners else "")
        )
