"""PodDisruptionBudgets around a drain: which budgets covered the pods it evicted (the health
gate's list), listing them, and whether they are whole again after the reboot (`pdbs_healthy`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from brain.core.selectors import selector_from_object
from brain.drain.classify import PodRef
from brain.kube import JsonApi

log = logging.getLogger(__name__)


def covering_budgets(
    budgets: Sequence[Mapping[str, Any]], pods: Mapping[PodRef, Mapping[str, str] | None]
) -> dict[PodRef, list[str]]:
    """For each pod, the budgets (namespace/name) whose selector matches it."""
    covering: dict[PodRef, list[str]] = {pod: [] for pod in pods}
    for budget in budgets:
        metadata = budget.get("metadata") or {}
        namespace = metadata.get("namespace", "")
        try:
            selector = selector_from_object((budget.get("spec") or {}).get("selector"))
        except ValueError:
            continue
        for pod, labels in pods.items():
            if pod.namespace == namespace and selector.matches(labels):
                covering[pod].append(f"{namespace}/{metadata.get('name', '')}")
    return covering


def list_budgets(api: JsonApi) -> list[dict[str, Any]]:
    try:
        listed = api.get("/apis/policy/v1/poddisruptionbudgets")
    except ApiException as error:
        # Without the list the drain still works; only the health gate loses its PDB names.
        log.warning("listing PodDisruptionBudgets failed: %s", error.reason)
        return []
    return list(listed.get("items") or [])


async def pdbs_healthy(
    api: client.ApiClient,
    pdbs: Iterable[str],
    view: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[bool, str]:
    """Are these budgets (namespace/name) whole again? For the health gate after a reboot.

    Healthy means the disruption controller has seen the budget's current generation and counts
    every expected pod healthy. A budget that no longer exists has nothing to wait for. `view`:
    every budget as a watch holds them now (the brain's shared budget watch), read instead of
    the API.
    """
    json_api = JsonApi(api)
    waiting: list[str] = []
    for full_name in pdbs:
        namespace, _, name = full_name.partition("/")
        if view is not None:
            if full_name not in view:
                continue
            budget: Mapping[str, Any] = view[full_name]
        else:
            try:
                budget = await asyncio.to_thread(
                    json_api.get,
                    f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/{name}",
                )
            except ApiException as error:
                if error.status == 404:
                    continue
                raise
        status = budget.get("status") or {}
        generation = (budget.get("metadata") or {}).get("generation", 0)
        if status.get("observedGeneration", 0) < generation:
            waiting.append(f"PDB {full_name} not yet observed by the disruption controller")
            continue
        healthy, expected = status.get("currentHealthy", 0), status.get("expectedPods", 0)
        if healthy < expected:
            waiting.append(f"PDB {full_name}: {healthy} of {expected} pods healthy")
    if waiting:
        return False, "; ".join(waiting)
    return True, "all PodDisruptionBudgets healthy"
