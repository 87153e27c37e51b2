"""Cordon and uncordon a node: one PATCH of `spec.unschedulable` each (idempotent).

The brain's flow cordons through brain/node_updates.py (with its marks in the same patch);
these are the bare forms the drain's tests and the reboot Job's tests use.
"""

from __future__ import annotations

import asyncio

from kubernetes import client

from brain.kube import JsonApi, node_path


async def _set_unschedulable(api: client.ApiClient, node: str, unschedulable: bool) -> None:
    await asyncio.to_thread(
        JsonApi(api).patch, node_path(node), {"spec": {"unschedulable": unschedulable}}
    )


async def cordon(api: client.ApiClient, node: str) -> None:
    """Mark the node unschedulable (one PATCH; cordoning a cordoned node changes nothing)."""
    await _set_unschedulable(api, node, True)


async def uncordon(api: client.ApiClient, node: str) -> None:
    """Make the node schedulable again (one PATCH; idempotent)."""
    await _set_unschedulable(api, node, False)
