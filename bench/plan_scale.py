"""How long the planner takes on a large synthetic cluster (pure: no API server).

A pass plans once (and again after its lock changed); every admission re-plans on the lock it
writes (without the preview's batches, and with the pass's governing assignment); `pitstop plan`
plans once with batches. This prints the time of each kind at the given size, in-process.

    uv run python bench/plan_scale.py --nodes 5000 --flagged 250 --max-unavailable 100

With `--cli`, the figures are `pitstop plan`'s path instead, all but the network: the
interpreter and the CLI's imports (a fresh process each), decoding the Node list's pages (as
the API server sends kwok Nodes, managedFields included), building the views and the plan, and
rendering the text and the JSON document:

    uv run python bench/plan_scale.py --cli --nodes 5000 --flagged 250 --max-unavailable 100
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from brain.core.lock_state import CompletedReboot, LockState, NodeLease, WindowRecord
from brain.core.node_view import NodeView
from brain.core.phase import Phase
from brain.core.planner import NamedWindow, governing_of, make_plan
from brain.core.window import parse_window_spec

NOW = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)
ZONE = "topology.kubernetes.io/zone"


def cluster(
    nodes: int, flagged: int, limit: int, zones: int
) -> tuple[list[NamedWindow], list[NodeView], LockState]:
    """One window over every node, `flagged` flagged, `limit` of them in maintenance."""
    spec = parse_window_spec(
        {"maxUnavailable": limit, "topology": {"key": ZONE, "maxUnavailable": "50%"}}, "all"
    )
    views = [
        NodeView(
            name=f"node-{index:05d}",
            labels={
                ZONE: f"zone-{index % zones}",
                "kubernetes.io/hostname": f"node-{index:05d}",
                "kubernetes.io/os": "linux",
                "type": "kwok",
            },
            reboot_required=index < flagged,
            reboot_required_since=NOW - timedelta(seconds=index) if index < flagged else None,
            boot_id=f"boot-{index}",
            created=NOW - timedelta(days=1),
        )
        for index in range(nodes)
    ]
    lock = LockState()
    for index in range(min(limit, flagged)):
        lock.nodes[f"node-{index:05d}"] = NodeLease(
            window="all", phase=Phase.DRAINING, since=NOW, domain=f"zone-{index % zones}"
        )
    record = WindowRecord()
    for index in range(limit, min(limit + 50, nodes)):
        record.record(
            CompletedReboot(
                node=f"node-{index:05d}",
                finished=NOW,
                result="Rebooted",
                message="",
                boot_id="new",
                boot_id_before=f"boot-{index}",
            )
        )
    lock.windows["all"] = record
    return [NamedWindow("all", spec)], views, lock


def timed(function: Callable[[], object], repeat: int) -> float:
    """The median of `repeat` runs, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def kwok_node(index: int, zones: int, flagged: bool) -> dict[str, Any]:
    """A Node as the API server lists a kwok Node of bench/scale.py (about 4.5 KB of JSON),
    managedFields included (the API server sends them; they are half of the bytes)."""
    name = f"node-{index:05d}"
    made = _stamp(NOW - timedelta(days=1))
    labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        ZONE: f"zone-{index % zones}",
        "type": "kwok",
    }
    annotations = {"kwok.x-k8s.io/node": "fake"}
    if flagged:
        labels["pitstop.dev/reboot-required"] = "true"
        annotations["pitstop.dev/reboot-required-since"] = _stamp(NOW - timedelta(seconds=index))
        annotations["pitstop.dev/reboot-reason"] = "scale bench"
    conditions = [
        {
            "lastHeartbeatTime": made,
            "lastTransitionTime": made,
            "message": f"kubelet reports {kind}",
            "reason": f"Kubelet{kind}",
            "status": "True" if kind == "Ready" else "False",
            "type": kind,
        }
        for kind in ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable")
    ]
    condition_fields = {
        f'k:{{"type":"{kind}"}}': {
            ".": {},
            **{f"f:{key}": {} for key in sorted(conditions[0])},
        }
        for kind in ("DiskPressure", "MemoryPressure", "NetworkUnavailable", "PIDPressure", "Ready")
    }
    managed = [
        {
            "manager": "kwok",
            "operation": "Update",
            "apiVersion": "v1",
            "time": made,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:status": {
                    "f:addresses": {".": {}, 'k:{"type":"InternalIP"}': {".": {}, "f:address": {}}},
                    "f:allocatable": {".": {}, "f:cpu": {}, "f:memory": {}, "f:pods": {}},
                    "f:capacity": {".": {}, "f:cpu": {}, "f:memory": {}, "f:pods": {}},
                    "f:conditions": {".": {}, **condition_fields},
                    "f:nodeInfo": {"f:architecture": {}, "f:kubeletVersion": {}},
                    "f:phase": {},
                }
            },
            "subresource": "status",
        },
        {
            "manager": "OpenAPI-Generator",
            "operation": "Update",
            "apiVersion": "v1",
            "time": made,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {
                    "f:annotations": {".": {}, **{f"f:{key}": {} for key in annotations}},
                    "f:labels": {".": {}, **{f"f:{key}": {} for key in labels}},
                }
            },
        },
    ]
    return {
        "metadata": {
            "name": name,
            "uid": f"00000000-0000-4000-8000-{index:012d}",
            "resourceVersion": str(1000 + index),
            "creationTimestamp": made,
            "labels": labels,
            "annotations": annotations,
            "managedFields": managed,
        },
        "spec": {
            "taints": [{"effect": "NoSchedule", "key": "kwok.x-k8s.io/node", "value": "fake"}]
        },
        "status": {
            "addresses": [{"address": f"10.0.{index // 250}.{index % 250}", "type": "InternalIP"}],
            "allocatable": {"cpu": "1k", "memory": "1Ti", "pods": "1M"},
            "capacity": {"cpu": "1k", "memory": "1Ti", "pods": "1M"},
            "conditions": conditions,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": f"boot-{index}",
                "containerRuntimeVersion": "kwok-v0.8.0",
                "kernelVersion": "kwok-v0.8.0",
                "kubeProxyVersion": "kwok-v0.8.0",
                "kubeletVersion": "kwok-v0.8.0",
                "machineID": "",
                "operatingSystem": "linux",
                "osImage": "",
                "systemUUID": "",
            },
            "phase": "Running",
        },
    }


def node_pages(nodes: int, flagged: int, zones: int, page_size: int) -> list[bytes]:
    """The Node list as the API server pages it (`limit`, `continue`), as bytes."""
    pages = []
    for start in range(0, nodes, page_size):
        last = start + page_size >= nodes
        page = {
            "kind": "NodeList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": "1"} | ({} if last else {"continue": f"page-{start}"}),
            "items": [
                kwok_node(index, zones, index < flagged)
                for index in range(start, min(nodes, start + page_size))
            ],
        }
        pages.append(json.dumps(page, separators=(",", ":")).encode())
    return pages


def in_fresh_process(code: str, repeat: int) -> float:
    """The median wall time of `python -c code` in a new process (as the CLI starts)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cli_figures(arguments: argparse.Namespace) -> dict[str, Any]:
    """`pitstop plan`'s path in-process, on the synthetic cluster, step by step."""
    from pitstopctl.connection import NODE_PAGE_SIZE
    from pitstopctl.node_pages import decode_node_page
    from pitstopctl.plan_document import plan_document, render_document
    from pitstopctl.plan_report import ClusterSnapshot, preview, render

    _windows, _views, lock = cluster(
        arguments.nodes, arguments.flagged, arguments.max_unavailable, arguments.zones
    )
    window_object = {
        "apiVersion": "pitstop.dev/v1alpha1",
        "kind": "NodesMaintenanceWindow",
        "metadata": {"name": "all", "generation": 1},
        "spec": {
            "maxUnavailable": arguments.max_unavailable,
            "topology": {"key": ZONE, "maxUnavailable": "50%"},
        },
    }
    pages = node_pages(arguments.nodes, arguments.flagged, arguments.zones, NODE_PAGE_SIZE)

    def decode_all() -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = []
        for page in pages:
            nodes.extend(decode_node_page(page)[0])
        return nodes

    nodes = decode_all()
    snapshot = ClusterSnapshot(windows=[window_object], nodes=nodes, lock=lock)
    report = preview(snapshot, NOW)
    repeat = arguments.repeat
    # What `pitstop plan` imports to plan (pitstopctl.main, then the client's kubeconfig
    # loading and the page decoder, imported when first used).
    imports = (
        "import pitstopctl.main, pitstopctl.node_pages\n"
        "from kubernetes import config\n"
        "from kubernetes.client import ApiClient"
    )
    figures: dict[str, Any] = {
        "nodes": arguments.nodes,
        "flagged": arguments.flagged,
        "limit": arguments.max_unavailable,
        "list_bytes": sum(len(page) for page in pages),
        "python_start_s": in_fresh_process("pass", repeat),
        "cli_imports_s": in_fresh_process(imports, repeat),
        # The CLI's path before: json.loads of each page, with the cyclic collector on.
        "json_loads_pages_s": timed(lambda: [json.loads(page) for page in pages], repeat),
    }
    gc.disable()  # as `pitstop` runs its commands (pitstopctl/main.py)
    try:
        figures |= {
            "decode_pages_s": timed(decode_all, repeat),
            "views_and_plan_s": timed(lambda: preview(snapshot, NOW), repeat),
            "render_text_s": timed(lambda: render(report), repeat),
            "render_json_s": timed(lambda: render_document(plan_document(report), "json"), repeat),
        }
    finally:
        gc.enable()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--flagged", type=int, default=250)
    parser.add_argument("--max-unavailable", type=int, default=100)
    parser.add_argument("--zones", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--cli", action="store_true", help="time `pitstop plan`'s path instead of the planner's"
    )
    arguments = parser.parse_args()
    if arguments.cli:
        print(json.dumps({key: _rounded(value) for key, value in cli_figures(arguments).items()}))
        return
    windows, views, lock = cluster(
        arguments.nodes, arguments.flagged, arguments.max_unavailable, arguments.zones
    )
    assignment = governing_of(windows, views)
    figures = {
        "nodes": arguments.nodes,
        "flagged": arguments.flagged,
        "limit": arguments.max_unavailable,
        "plan_full_s": timed(lambda: make_plan(windows, views, lock, NOW), arguments.repeat),
        "governing_s": timed(lambda: governing_of(windows, views), arguments.repeat),
        "admission_replan_s": timed(
            lambda: make_plan(windows, views, lock, NOW, assignment=assignment, batches=False),
            arguments.repeat,
        ),
    }
    print(json.dumps({key: _rounded(value) for key, value in figures.items()}))


def _rounded(value: object) -> object:
    return round(value, 4) if isinstance(value, float) else value


if __name__ == "__main__":
    main()
