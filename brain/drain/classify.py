"""Which pods a drain evicts, skips, or refuses to touch: `kubectl drain`'s rules (pure).

The first stage of a drain, and the only one that decides: the evictions (evictions.py) carry
out what this says, for the pods found on the node and for those arriving during the drain.
No kubernetes client here: pods are the API's JSON (dicts).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from brain.core.selectors import EVERYTHING, Selector

MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
FINISHED_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class DrainOptions:
    """How to drain: the window's drain spec, mapped by the caller."""

    grace_period_seconds: int | None = None
    pod_selector: Selector = EVERYTHING
    delete_emptydir_data: bool = False
    force: bool = False
    # A refused eviction is retried when its PDB allows again, and after this long at the latest.
    eviction_retry_seconds: float = 5.0
    # (namespace, name) of pods never evicted: the brain's own pod (settings.pod_name).
    keep_pods: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True, order=True)
class PodRef:
    """One pod, by identity: a pod recreated under the same name is a different PodRef."""

    namespace: str
    name: str
    uid: str = ""

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @classmethod
    def from_pod(cls, pod: Mapping[str, Any]) -> PodRef:
        metadata = pod.get("metadata") or {}
        return cls(
            str(metadata.get("namespace", "")),
            str(metadata.get("name", "")),
            str(metadata.get("uid", "")),
        )


@dataclass(frozen=True)
class SkippedPod:
    pod: PodRef
    reason: str


@dataclass(frozen=True)
class DrainProblem:
    """A pod the drain refuses to remove with these options (kubectl drain would refuse too)."""

    pod: PodRef
    reason: str

    def __str__(self) -> str:
        return f"{self.pod}: {self.reason}"


class Classification(NamedTuple):
    to_evict: list[PodRef]
    skipped: list[SkippedPod]
    problems: list[DrainProblem]


def _controller_of(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for owner in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("controller"):
            return owner  # type: ignore[no-any-return]
    return None


def is_daemon_set_pod(pod: Mapping[str, Any]) -> bool:
    """Is the pod a DaemonSet's (node-local agents, never evicted)?"""
    controller = _controller_of(pod)
    return controller is not None and controller.get("kind") == "DaemonSet"


def classify_pods(pods: Iterable[Mapping[str, Any]], options: DrainOptions) -> Classification:
    """Decide, like `kubectl drain`, what happens to each pod of a node (pure).

    Order of the checks: the brain's own pod, podSelector, mirror pod, DaemonSet pod (all
    skipped); finished pods are evicted whatever else holds; then a pod without a controller
    needs `force` and a pod with emptyDir volumes needs `delete_emptydir_data` (a pod failing
    both gets both reasons).
    """
    to_evict: list[PodRef] = []
    skipped: list[SkippedPod] = []
    problems: list[DrainProblem] = []
    for pod in pods:
        ref = PodRef.from_pod(pod)
        metadata = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        phase = (pod.get("status") or {}).get("phase")
        if ref.key in options.keep_pods:
            skipped.append(SkippedPod(ref, "the brain's own pod (it restarts with the node)"))
            continue
        if not options.pod_selector.matches(metadata.get("labels")):
            skipped.append(SkippedPod(ref, "does not match the podSelector"))
            continue
        if MIRROR_POD_ANNOTATION in (metadata.get("annotations") or {}):
            skipped.append(SkippedPod(ref, "mirror (static) pod"))
            continue
        controller = _controller_of(pod)
        if is_daemon_set_pod(pod):
            skipped.append(SkippedPod(ref, "DaemonSet-managed pod"))
            continue
        if phase in FINISHED_PHASES:
            to_evict.append(ref)
            continue
        reasons: list[str] = []
        if controller is None and not options.force:
            reasons.append("has no controller (set force to delete it)")
        volumes = spec.get("volumes") or []
        if not options.delete_emptydir_data and any("emptyDir" in volume for volume in volumes):
            reasons.append("uses emptyDir volumes (set deleteEmptyDirData to delete it)")
        if reasons:
            problems.append(DrainProblem(ref, "; ".join(reasons)))
        else:
            to_evict.append(ref)
    return Classification(to_evict, skipped, problems)
