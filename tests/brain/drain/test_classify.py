"""Which pods a drain evicts, skips or refuses (kubectl drain's rules)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from brain.core.selectors import parse_selector
from brain.drain import classify
from brain.drain.classify import DrainOptions, PodRef, classify_pods
from tests.brain.drain.fakes import pod

DEFAULTS = DrainOptions()


EMPTY_DIR = [{"name": "scratch", "emptyDir": {}}]


def names(refs: list[PodRef]) -> list[str]:
    return [ref.name for ref in refs]


def test_replicated_pods_are_evicted() -> None:
    to_evict, skipped, problems = classify_pods([pod("web-1"), pod("web-2")], DEFAULTS)
    assert names(to_evict) == ["web-1", "web-2"]
    assert to_evict[0] == PodRef("default", "web-1", "uid-web-1")
    assert skipped == [] and problems == []


def test_daemonset_pods_are_skipped_even_with_emptydir_and_no_force() -> None:
    to_evict, skipped, problems = classify_pods(
        [pod("agent", owner="DaemonSet", volumes=EMPTY_DIR)], DEFAULTS
    )
    assert to_evict == [] and problems == []
    assert [(s.pod.name, s.reason) for s in skipped] == [("agent", "DaemonSet-managed pod")]


def test_mirror_pods_are_skipped_even_without_a_controller() -> None:
    static = pod("etcd", owner=None, annotations={"kubernetes.io/config.mirror": "abc"})
    to_evict, skipped, problems = classify_pods([static], DEFAULTS)
    assert to_evict == [] and problems == []
    assert skipped[0].pod.name == "etcd" and "mirror" in skipped[0].reason


def test_a_non_controller_owner_does_not_count_as_a_controller() -> None:
    owned = pod("loose", owner=None)
    owned["metadata"]["ownerReferences"] = [{"kind": "ConfigMap", "name": "c", "uid": "y"}]
    _, _, problems = classify_pods([owned], DEFAULTS)
    assert [p.pod.name for p in problems] == ["loose"]


def test_a_bare_pod_is_refused_without_force_and_named() -> None:
    to_evict, _, problems = classify_pods([pod("bare", owner=None), pod("web")], DEFAULTS)
    assert names(to_evict) == ["web"]
    assert len(problems) == 1
    assert problems[0].pod == PodRef("default", "bare", "uid-bare")
    assert "no controller" in problems[0].reason
    assert str(problems[0]).startswith("default/bare: ")


def test_a_bare_pod_is_evicted_with_force() -> None:
    to_evict, _, problems = classify_pods([pod("bare", owner=None)], DrainOptions(force=True))
    assert names(to_evict) == ["bare"] and problems == []


def test_emptydir_pods_need_delete_emptydir_data() -> None:
    cache = pod("cache", volumes=EMPTY_DIR)
    _, _, problems = classify_pods([cache], DEFAULTS)
    assert [p.pod.name for p in problems] == ["cache"] and "emptyDir" in problems[0].reason
    to_evict, _, problems = classify_pods([cache], DrainOptions(delete_emptydir_data=True))
    assert names(to_evict) == ["cache"] and problems == []


def test_other_volume_kinds_need_nothing() -> None:
    configured = pod("configured", volumes=[{"name": "c", "configMap": {"name": "c"}}])
    to_evict, _, problems = classify_pods([configured], DEFAULTS)
    assert names(to_evict) == ["configured"] and problems == []


def test_a_pod_failing_both_checks_gets_both_reasons() -> None:
    _, _, problems = classify_pods([pod("both", owner=None, volumes=EMPTY_DIR)], DEFAULTS)
    assert len(problems) == 1
    assert "no controller" in problems[0].reason and "emptyDir" in problems[0].reason
    # force alone leaves the emptyDir refusal.
    _, _, problems = classify_pods(
        [pod("both", owner=None, volumes=EMPTY_DIR)], DrainOptions(force=True)
    )
    assert "no controller" not in problems[0].reason and "emptyDir" in problems[0].reason


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_finished_pods_are_removed_freely(phase: str) -> None:
    done = pod("done", owner=None, phase=phase, volumes=EMPTY_DIR)
    to_evict, skipped, problems = classify_pods([done], DEFAULTS)
    assert names(to_evict) == ["done"] and skipped == [] and problems == []


def test_pods_outside_the_pod_selector_are_skipped_before_any_other_check() -> None:
    options = DrainOptions(pod_selector=parse_selector("app=web"))
    pods = [
        pod("web", labels={"app": "web"}),
        pod("db", labels={"app": "db"}, owner=None),  # would be refused, but is not selected
        pod("none"),
    ]
    to_evict, skipped, problems = classify_pods(pods, options)
    assert names(to_evict) == ["web"]
    assert sorted(s.pod.name for s in skipped) == ["db", "none"]
    assert all("podSelector" in s.reason for s in skipped)
    assert problems == []


def test_a_selected_daemonset_pod_is_still_skipped() -> None:
    options = DrainOptions(pod_selector=parse_selector("app=agent"))
    to_evict, skipped, _ = classify_pods(
        [pod("agent", owner="DaemonSet", labels={"app": "agent"})], options
    )
    assert to_evict == [] and skipped[0].reason == "DaemonSet-managed pod"


def test_pods_without_labels_or_volumes_keys_are_handled() -> None:
    minimal = {
        "metadata": {
            "name": "m",
            "namespace": "n",
            "uid": "u",
            "ownerReferences": [{"kind": "Job", "controller": True}],
        }
    }
    to_evict, _, _ = classify_pods([minimal], DrainOptions(pod_selector=parse_selector("!skip")))
    assert to_evict == [PodRef("n", "m", "u")]


def test_the_brains_own_pod_is_never_evicted_but_its_namesakes_are() -> None:
    options = DrainOptions(keep_pods=frozenset({("pitstop-system", "pitstop-brain-7d9")}))
    to_evict, skipped, problems = classify_pods(
        [
            pod("pitstop-brain-7d9", namespace="pitstop-system"),
            pod("pitstop-brain-7d9", namespace="other"),
        ],
        options,
    )
    assert [(ref.namespace, ref.name) for ref in to_evict] == [("other", "pitstop-brain-7d9")]
    assert [(s.pod.namespace, s.reason) for s in skipped] == [
        ("pitstop-system", "the brain's own pod (it restarts with the node)")
    ]
    assert problems == []


def test_classification_is_pure_it_imports_no_kubernetes_client_nor_io() -> None:
    tree = ast.parse(Path(classify.__file__).read_text())
    imported = {
        alias.name if isinstance(node, ast.Import) else str(node.module)
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    allowed = {"__future__", "collections.abc", "dataclasses", "typing", "brain.core.selectors"}
    assert imported <= allowed, imported - allowed
