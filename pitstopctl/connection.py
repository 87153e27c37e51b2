"""How every `pitstop` subcommand reaches the cluster: its options, the client, what it reads.

One place for the connection, so subcommand modules import it and `main.py` imports them,
without a circle.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from brain.cluster_failures import CRD_MISSING, CommandError
from brain.core.api import DEFAULT_LOCK_NAME, DEFAULT_NAMESPACE, GROUP, PLURAL, VERSION
from brain.core.lock_state import LOCK_DATA_KEY, LockState, LockUnreadableError, parse_lock_data
from pitstopctl.plan_report import ClusterSnapshot, PlanPreview


def cluster_options() -> argparse.ArgumentParser:
    """Options every subcommand that talks to the cluster accepts (after the subcommand)."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)"
    )
    options.add_argument("--context", help="kubeconfig context (default: the current one)")
    options.add_argument(
        "--namespace",
        default=os.environ.get("PITSTOP_NAMESPACE", DEFAULT_NAMESPACE),
        help="the brain's namespace, where the lock lives (env PITSTOP_NAMESPACE,"
        f" default {DEFAULT_NAMESPACE})",
    )
    options.add_argument(
        "--lock-name",
        default=os.environ.get("PITSTOP_LOCK_NAME", DEFAULT_LOCK_NAME),
        help=f"the lock ConfigMap (env PITSTOP_LOCK_NAME, default {DEFAULT_LOCK_NAME})",
    )
    return options


def api_client(arguments: argparse.Namespace) -> Any:
    """A kubernetes ApiClient from --kubeconfig/--context, else the environment's."""
    from kubernetes import config

    if arguments.kubeconfig and not os.path.exists(arguments.kubeconfig):
        raise CommandError(f"kubeconfig {arguments.kubeconfig} does not exist", 2)
    if arguments.kubeconfig or arguments.context:
        return config.new_client_from_config(
            config_file=arguments.kubeconfig, context=arguments.context
        )
    try:
        config.load_incluster_config()
    except config.ConfigException:
        return config.new_client_from_config()
    from kubernetes import client

    return client.ApiClient()


def read_snapshot(client_handle: Any, namespace: str, lock_name: str) -> ClusterSnapshot:
    """Read (only read) the windows, the nodes and the lock."""
    from kubernetes.client.exceptions import ApiException

    from brain.kube import JsonApi

    try:
        windows = JsonApi(client_handle).get(f"/apis/{GROUP}/{VERSION}/{PLURAL}")["items"]
    except ApiException as error:
        if error.status == 404:
            raise CommandError(CRD_MISSING) from error
        raise
    return ClusterSnapshot(
        windows=windows,
        nodes=list_nodes(client_handle),
        lock=read_lock_state(client_handle, namespace, lock_name),
    )


NODE_PAGE_SIZE = 500


def list_nodes(client_handle: Any) -> list[dict[str, Any]]:
    """Every Node as the API's JSON, in pages, each Node cut down to what a NodeView reads
    (pitstopctl/node_pages.py: a third of json.loads' time at 5,000 Nodes). Not through the
    client's models: turning 5,000 Nodes into V1Node objects and back to dicts took most of
    `pitstop plan`'s 20-34 s."""
    from brain.kube import JsonApi
    from pitstopctl.node_pages import decode_node_page

    nodes: list[dict[str, Any]] = []
    token = ""
    while True:
        query: dict[str, Any] = {"limit": NODE_PAGE_SIZE}
        if token:
            query["continue"] = token
        items, token = decode_node_page(JsonApi(client_handle).get_bytes("/api/v1/nodes", query))
        nodes.extend(items)
        if not token:
            return nodes


def read_lock_state(client_handle: Any, namespace: str, lock_name: str) -> LockState:
    """The lock's content (a missing ConfigMap is an empty lock)."""
    from kubernetes.client.exceptions import ApiException

    from brain.kube import JsonApi

    try:
        config_map = JsonApi(client_handle).get(
            f"/api/v1/namespaces/{namespace}/configmaps/{lock_name}"
        )
    except ApiException as error:
        if error.status != 404:
            raise
        return LockState()
    try:
        return parse_lock_data(
            (config_map.get("data") or {}).get(LOCK_DATA_KEY), f"{namespace}/{lock_name}"
        )
    except LockUnreadableError as error:
        raise CommandError(f"{error} (the brain decides nothing until it is fixed)") from None


def read_node_blockers(client_handle: Any, report: PlanPreview) -> dict[str, str]:
    """Scope-Node pod blockers, asked as the brain asks them (a read-only pod list per window):
    node -> why it waits, for the nodes each window governs."""
    from brain.core.window import PodBlockerScope

    asking = {
        name: spec
        for name, spec in report.specs.items()
        if any(entry.scope is PodBlockerScope.NODE for entry in spec.blockers.pods)
    }
    if not asking:  # no import of the blockers (aiohttp, for Prometheus: 0.1 s) for nothing
        return {}
    import asyncio

    from brain.integrations.window_blockers import blocker_config, node_blockers

    held: dict[str, str] = {}
    for name, spec in sorted(asking.items()):
        config = blocker_config(spec)
        if not config.node_pods:
            continue
        failed, per_node = asyncio.run(node_blockers(config, client_handle))
        if failed.blocked:
            raise CommandError(f"window {name}: {failed.message}")
        held.update(
            {node: why for node, why in per_node.items() if report.plan.governing.get(node) == name}
        )
    return held
