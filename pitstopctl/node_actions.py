"""`pitstop retry NODE` and `pitstop release NODE`: a person acts on a node the brain holds.

The command only annotates the Node (`pitstop.dev/action`); the brain, which owns the lock,
acts on its next pass and removes the annotation. So the command works the same whether the
brain runs or not, and the brain stays the only writer of the lock.
"""

from __future__ import annotations

import argparse
from typing import Any

from brain.core.phase import Phase
from pitstop import contract
from pitstopctl.connection import api_client, cluster_options, read_lock_state

EXPLANATIONS = {
    contract.ACTION_RETRY: "the brain will drain and reboot it again (a new attempt)",
    contract.ACTION_RELEASE: (
        "the brain will uncordon it (unless it was cordoned before) and free its slot;"
        " the window's rollout goes on"
    ),
}
# What releasing means in each phase (any phase in maintenance may be released).
RELEASE_IN_PHASE = {
    Phase.DRAINING: "its drain is stopped",
    Phase.REBOOTING: "no reboot is started",
    Phase.WAITING_FOR_NODE: "the wait is given up and its reboot Job deleted",
    Phase.HEALTH_CHECK: "the health gate is skipped",
    Phase.FAILED: "",
}
RESTS = "; a node that has not rebooted rests (drain.timeout) before the window takes it again"


def request_action(
    client_handle: Any, node: str, action: str, namespace: str, lock_name: str
) -> str:
    """Check the node is in a state the action applies to, annotate it, say what follows.

    The annotation carries the start of the phase the person saw (`action-since`): if the
    node has moved on by the time the brain reads it, the brain refuses it instead of acting
    on a phase nobody asked about.
    """
    from kubernetes.client.exceptions import ApiException

    from brain.kube import JsonApi, node_path

    api = JsonApi(client_handle)
    try:
        api.get(node_path(node))
    except ApiException as error:
        if error.status == 404:
            raise SystemExit(f"pitstop: node {node!r} does not exist") from error
        raise
    lock = read_lock_state(client_handle, namespace, lock_name)
    lease = lock.nodes.get(node)
    if lease is None:
        raise SystemExit(f"pitstop: node {node!r} is not in maintenance; nothing to {action}")
    if action == contract.ACTION_RETRY and lease.phase != Phase.FAILED:
        raise SystemExit(
            f"pitstop: node {node!r} is {lease.phase}, not Failed; only a Failed node is"
            " retried (release gives up on a node in any phase)"
        )
    api.patch(
        node_path(node),
        {
            "metadata": {
                "annotations": {
                    contract.ACTION_ANNOTATION: action,
                    contract.ACTION_SINCE_ANNOTATION: lease.since.isoformat(),
                }
            }
        },
    )
    explanation = EXPLANATIONS[action]
    if action == contract.ACTION_RELEASE:
        means = RELEASE_IN_PHASE.get(lease.phase, "")
        explanation += (f"; {means}" if means else "") + RESTS
    return (
        f"node {node} ({lease.phase} in window {lease.window}): {action} requested; {explanation}"
    )


def register_node_actions(subcommands: Any) -> None:

    for action, help_text in (
        (contract.ACTION_RETRY, "retry a Failed node (drain and reboot it again)"),
        (contract.ACTION_RELEASE, "release a node from maintenance and free its slot"),
    ):
        parser = subcommands.add_parser(
            action,
            parents=[cluster_options()],
            help=help_text,
            description=f"{help_text}. {EXPLANATIONS[action]}.",
        )
        parser.add_argument("node", help="the Node's name")

        def run(arguments: argparse.Namespace, action: str = action) -> int:
            handle = api_client(arguments)
            try:
                message = request_action(
                    handle, arguments.node, action, arguments.namespace, arguments.lock_name
                )
            finally:
                handle.close()
            print(message)
            return 0

        parser.set_defaults(handler=run)


def register_convert_kured(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "convert-kured",
        add_help=False,
        help="print a NodesMaintenanceWindow equivalent to a kured configuration",
    )
    parser.add_argument("rest", nargs=argparse.REMAINDER)

    def run(arguments: argparse.Namespace) -> int:
        from pitstopctl.kured_convert import main as convert_main

        return convert_main(list(arguments.rest))

    parser.set_defaults(handler=run)
