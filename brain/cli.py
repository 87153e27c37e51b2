"""`pitstop`: the admin command line.

Each subcommand lives in a function that registers its parser and points `handler` at the
function that runs it, so others can add theirs (retry, release, convert-kured) by appending a
registration function to SUBCOMMANDS, with the logic in their own modules.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from brain.cli_errors import CRD_MISSING, CommandError, run_command
from brain.lock import LOCK_DATA_KEY, LockState, LockUnreadableError, parse_lock_data
from brain.plan_document import OUTPUT_FORMATS, plan_document, render_document
from brain.plan_report import ClusterSnapshot, PlanPreview, preview, render
from brain.window import GROUP, PLURAL, VERSION
from pitstop.version import version_line

DEFAULT_NAMESPACE = "pitstop-system"
DEFAULT_LOCK_NAME = "pitstop-lock"


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
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    custom = client.CustomObjectsApi(client_handle)
    core = client.CoreV1Api(client_handle)
    try:
        windows = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
    except ApiException as error:
        if error.status == 404:
            raise CommandError(CRD_MISSING) from error
        raise
    nodes = [client_handle.sanitize_for_serialization(node) for node in core.list_node().items]
    return ClusterSnapshot(
        windows=windows, nodes=nodes, lock=read_lock_state(client_handle, namespace, lock_name)
    )


def read_lock_state(client_handle: Any, namespace: str, lock_name: str) -> LockState:
    """The lock's content (a missing ConfigMap is an empty lock)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        config_map = client.CoreV1Api(client_handle).read_namespaced_config_map(
            lock_name, namespace
        )
    except ApiException as error:
        if error.status != 404:
            raise
        return LockState()
    try:
        return parse_lock_data(
            (config_map.data or {}).get(LOCK_DATA_KEY), f"{namespace}/{lock_name}"
        )
    except LockUnreadableError as error:
        raise CommandError(f"{error} (the brain decides nothing until it is fixed)") from None


def read_node_blockers(client_handle: Any, report: PlanPreview) -> dict[str, str]:
    """Scope-Node pod blockers, asked as the brain asks them (a read-only pod list per window):
    node -> why it waits, for the nodes each window governs."""
    import asyncio

    from brain.window_blockers import blocker_config, node_blockers

    held: dict[str, str] = {}
    for name, spec in sorted(report.specs.items()):
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


def run_plan(arguments: argparse.Namespace) -> int:
    handle = api_client(arguments)
    now = datetime.now(UTC)
    try:
        snapshot = read_snapshot(handle, arguments.namespace, arguments.lock_name)
        report = preview(snapshot, now)
        held = read_node_blockers(handle, report)
    finally:
        handle.close()
    if held:
        report = preview(snapshot, now, node_blockers=held)
    if arguments.notify_preview:
        from brain.notify_preview import render_preview

        governed: dict[str, list[str]] = {}
        for node, window in report.plan.governing.items():
            governed.setdefault(window, []).append(node)
        sys.stdout.write(render_preview(report.specs, arguments.cluster_name, governed))
    elif arguments.output == "text":
        sys.stdout.write(render(report))
    else:
        sys.stdout.write(render_document(plan_document(report), arguments.output))
    return 0


def register_plan(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "plan",
        parents=[cluster_options()],
        help="preview what the brain would do now (read-only)",
        description="For each NodesMaintenanceWindow: whether it is open, when it next opens"
        " and closes, the nodes it governs, the flagged ones in the order and batch they would"
        " go in, and the nodes held back with the reason. Uses the brain's own planner;"
        " changes nothing.",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=OUTPUT_FORMATS,
        default="text",
        type=str.lower,
        help="text (default), or json / yaml for scripts (schema: docs/operations.md)",
    )
    parser.add_argument(
        "--notify-preview",
        action="store_true",
        help="instead of the plan: each window's notifications (notify.title/body templates)"
        " rendered with sample values",
    )
    parser.add_argument(
        "--cluster-name",
        default=os.environ.get("PITSTOP_CLUSTER_NAME", ""),
        help="$cluster in the preview: the brain's clusterName (env PITSTOP_CLUSTER_NAME)",
    )
    parser.set_defaults(handler=run_plan)


def _register_others(subcommands: Any) -> None:
    from brain.node_actions import register_convert_kured, register_node_actions
    from brain.status_report import register_status

    register_status(subcommands)
    register_node_actions(subcommands)
    register_convert_kured(subcommands)


SUBCOMMANDS: list[Callable[[Any], None]] = [register_plan, _register_others]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pitstop", description="Pitstop admin: safe, coordinated node reboots."
    )
    parser.add_argument("--version", action="version", version=version_line("pitstop"))
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in SUBCOMMANDS:
        register(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["convert-kured"]:  # it parses its own options (kured's flags among them)
        from brain.kured_convert import main as convert_main

        return convert_main(words[1:])
    parser = build_parser()
    arguments = parser.parse_args(words)
    handler: Callable[[argparse.Namespace], int] | None = getattr(arguments, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    return run_command("pitstop", lambda: handler(arguments))


if __name__ == "__main__":
    sys.exit(main())
