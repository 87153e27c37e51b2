"""`pitstop`: the admin command line (its parser and `pitstop plan`).

Each subcommand lives in a function that registers its parser and points `handler` at the
function that runs it, so others can add theirs (retry, release, convert-kured) by appending a
registration function to SUBCOMMANDS, with the logic in their own modules.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from brain.cluster_failures import run_command
from pitstopctl.connection import api_client, cluster_options, read_node_blockers, read_snapshot
from pitstopctl.node_actions import register_convert_kured, register_node_actions
from pitstopctl.plan_document import OUTPUT_FORMATS, plan_document, render_document
from pitstopctl.plan_report import preview, render
from pitstopctl.status_report import register_status


class _PrintVersion(argparse.Action):
    """`--version`: the version is looked up only when asked (importlib.metadata, 50 ms, was
    imported at every start of every subcommand)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS) -> None:
        super().__init__(
            option_strings,
            dest,
            default=argparse.SUPPRESS,
            nargs=0,
            help="show program's version number and exit",
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        from pitstop.version import version_line

        sys.stdout.write(version_line("pitstop") + "\n")
        parser.exit()


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
        from pitstopctl.notify_preview import render_preview

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
    register_status(subcommands)
    register_node_actions(subcommands)
    register_convert_kured(subcommands)


SUBCOMMANDS: list[Callable[[Any], None]] = [register_plan, _register_others]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pitstop", description="Pitstop admin: safe, coordinated node reboots."
    )
    parser.add_argument("--version", action=_PrintVersion)
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in SUBCOMMANDS:
        register(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["convert-kured"]:  # it parses its own options (kured's flags among them)
        from pitstopctl.kured_convert import main as convert_main

        return convert_main(words[1:])
    parser = build_parser()
    arguments = parser.parse_args(words)
    handler: Callable[[argparse.Namespace], int] | None = getattr(arguments, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    # A short-lived command: reference counting frees what it drops, and the cyclic collector
    # would only scan the listed Nodes' objects again and again as they pile up (a third of
    # `pitstop plan`'s CPU at 5,000 Nodes). Back on when done (tests call main in-process).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return run_command("pitstop", lambda: handler(arguments))
    finally:
        if collecting:
            gc.enable()


if __name__ == "__main__":
    sys.exit(main())
