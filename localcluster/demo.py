"""`python -m localcluster.demo`: a safe rolling reboot to watch, on a local simulated cluster.

Everything is real except the hosts: a local control plane with kwok nodes and workloads, the
brain and one detector per node as local processes, a NodesMaintenanceWindow open now. Each
node's host is played by HostSimulator: it "reboots" a few seconds after its reboot Job appears
and deletes the node's sentinel file, so the node's own detector clears the flag, as on a real
host. Some nodes are flagged by creating their sentinel files; the demo prints every transition
it sees in the lock, then a summary, and fails (exit 1) if the budget was ever exceeded.

python -m localcluster.demo [--nodes 12] [--zones 3] [--budget 2] [--per-zone 1] [--flagged N]
                            [--keep] [--keep-logs] [--quiet] [--timeout S] [--summary-json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import signal
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from kubernetes import client, config, watch

from brain.core.api import (
    DEFAULT_JOB_NAMESPACE,
    DEFAULT_LOCK_NAME,
    DEFAULT_NAMESPACE,
    GROUP,
    PLURAL,
    VERSION,
)
from localcluster.controlplane import ControlPlane
from localcluster.hosts import HostBehaviour, HostSimulator, RebootRecord
from localcluster.nodes import (
    ZONE_LABEL,
    create_daemonset,
    create_deployment,
    create_nodes,
    running_pods,
    wait_for,
)
from localcluster.observe import BackgroundWatch, LockObserver, LockSnapshot
from localcluster.pitstop_processes import BrainProcess, DetectorProcess, install_pitstop_api
from localcluster.processes import Component, ComponentError
from pitstop import contract

NAMESPACE = DEFAULT_NAMESPACE
JOB_NAMESPACE = DEFAULT_JOB_NAMESPACE
LOCK_NAME = DEFAULT_LOCK_NAME
WINDOW = "demo-rollout"
APPS_NAMESPACE = "shop"
SENTINEL_NAME = "reboot-required"
WINDOW_API = (GROUP, VERSION, PLURAL)


@dataclass
class Options:
    nodes: int = 12
    zones: int = 3
    budget: int = 2
    per_zone: int = 1
    flagged: int | None = None
    keep: bool = False
    keep_logs: bool = False
    quiet: bool = False
    timeout: float = 300.0
    summary_json: Path | None = None
    reboot_delay: float = 2.0  # reboot Job created -> host goes down
    down_seconds: float = 2.0
    jitter: float = 1.5
    slow_down_seconds: float = 10.0  # the one slow host

    @property
    def flagged_count(self) -> int:
        wanted = self.flagged if self.flagged is not None else max(1, self.nodes * 2 // 3)
        return max(0, min(wanted, self.nodes))

    @property
    def concurrency(self) -> int:
        """How many nodes the window lets into maintenance at once, at best."""
        return max(1, min(self.budget, self.zones * self.per_zone, self.flagged_count or 1))


@dataclass
class NodeTimes:
    """When the demo saw each step of one node (monotonic seconds; None if not seen)."""

    zone: str
    flagged: float | None = None
    phases: dict[str, float] = field(default_factory=dict)
    finished: float | None = None
    result: str = ""
    cleared: float | None = None

    def span(self, start: str, end: str) -> float | None:
        begin = self.phases.get(start)
        stop = self.finished if end == "Done" else self.phases.get(end)
        if begin is None or stop is None:
            return None
        return stop - begin

    @property
    def drain(self) -> float | None:
        return self.span("Draining", "Rebooting")

    @property
    def reboot(self) -> float | None:
        """Reboot Job created -> node back with a new boot ID (WaitingForNode included). A node
        whose health gate passed as it returned goes to Done without a HealthCheck of its own
        in the lock: back and released in the same write."""
        return self.span("Rebooting", "HealthCheck" if "HealthCheck" in self.phases else "Done")

    @property
    def hand_off(self) -> float | None:
        """Node back -> its slot released to the next node (health gate, uncordon)."""
        if "HealthCheck" not in self.phases and self.finished is not None:
            return 0.0  # the gate passed as the node returned: released in the same write
        return self.span("HealthCheck", "Done")

    @property
    def queued(self) -> float | None:
        """Sentinel file created -> admitted (detector, planner, waiting for a slot)."""
        if self.flagged is None or "Draining" not in self.phases:
            return None
        return self.phases["Draining"] - self.flagged


# Continuation lines are indented under the text when that leaves it this many columns and
# room for its longest word, else by CONTINUATION_INDENT.
MIN_TEXT_COLUMNS = 30
CONTINUATION_INDENT = 4


def terminal_width() -> int | None:
    """$COLUMNS, else the terminal's width; None when the output is not a terminal (a pipe or
    a file has no width to fit, and whole lines are easier to search)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError):
        return None


def wrap(head: str, text: str, width: int | None, indent: int | None = None) -> list[str]:
    """`head` then `text`, wrapped at spaces to `width` (None: one line), continuation lines
    indented (under `text` when there is room). Nothing is cut: a word wider than a line (a
    long Job name on a narrow terminal) gets a line of its own, whole; hyphens never break a
    name."""
    if width is None:
        return [(head + text).rstrip()]
    if indent is None:
        longest = max((len(word) for word in text.split()), default=0)
        room = width - len(head)
        indent = len(head) if room >= max(longest, MIN_TEXT_COLUMNS) else CONTINUATION_INDENT
    lines = textwrap.wrap(
        head + text,
        width=max(width, indent + 1),
        subsequent_indent=" " * indent,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return lines or [head.rstrip()]


class Printer:
    """Timestamped lines on stdout, from any thread; transition lines can be silenced.

    Lines are wrapped to `width`, else to the terminal's (read at each line: it may change).
    """

    def __init__(self, quiet: bool, width: int | None = None) -> None:
        self.quiet = quiet
        self.width = width
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def columns(self) -> int | None:
        return self.width or terminal_width()

    def say(self, text: str = "") -> None:
        with self._lock:
            print(text, flush=True)

    def paragraph(self, text: str) -> None:
        """Prose, wrapped, continuation lines indented by 2."""
        self.say("\n".join(wrap("", text, self.columns(), indent=2)))

    def transition(self, node: str, zone: str, phase: str, reason: str, progress: str) -> None:
        if self.quiet:
            return
        clock = datetime.now().strftime("%H:%M:%S")
        elapsed = time.monotonic() - self.started
        head = f"{clock} {elapsed:6.1f}s  {progress}  {node:<8} {zone:<7} {phase:<14} "
        # One print for all the lines: another thread's line cannot land between them.
        self.say("\n".join(wrap(head, " ".join(reason.split()), self.columns())))


def _api_client(plane: ControlPlane) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(str(plane.kubeconfig), client_configuration=configuration)
    return client.ApiClient(configuration)


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ensure_namespace(api: client.ApiClient, name: str) -> None:
    """A fixed-name namespace (easy to type in `kubectl -n`), ready for pods."""
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name}})
    wait_for(lambda: core.read_namespaced_service_account("default", name), f"{name}/default SA")


def create_workloads(api: client.ApiClient, nodes: int) -> int:
    """Deployments with PDBs and a DaemonSet; returns how many pods to expect.

    orders-db stands for a quorum app (3 replicas, one may be away). It is a Deployment, not a
    StatefulSet: kwok deletes an evicted pod at once, and a StatefulSet pod recreated under the
    same name is then counted as still disrupted by its PDB for two minutes (the disruption
    controller's DeletionTimeout), which stalls the next drain of the demo for that long.
    """
    _ensure_namespace(api, APPS_NAMESPACE)
    web = max(2, nodes)
    checkout = max(2, nodes // 2)
    create_deployment(api, APPS_NAMESPACE, "web", web, pdb_max_unavailable=2)
    create_deployment(api, APPS_NAMESPACE, "checkout", checkout, pdb_min_available=checkout - 1)
    create_daemonset(api, APPS_NAMESPACE, "node-agent")
    create_deployment(api, APPS_NAMESPACE, "orders-db", 3, pdb_max_unavailable=1)
    return web + checkout + nodes + 3


def window_body(options: Options, now: datetime) -> dict[str, Any]:
    """The sample window: open now for two hours, `budget` nodes at once, `per_zone` per zone."""
    return {
        "apiVersion": "pitstop.dev/v1alpha1",
        "kind": "NodesMaintenanceWindow",
        "metadata": {"name": WINDOW},
        "spec": {
            "schedule": {
                "oneOff": [
                    {
                        "start": _timestamp(now - timedelta(minutes=1)),
                        "end": _timestamp(now + timedelta(hours=2)),
                    }
                ]
            },
            "maxUnavailable": options.budget,
            "topology": {"key": ZONE_LABEL, "maxUnavailable": options.per_zone},
            "drain": {"timeout": "60s"},
        },
    }


def _metrics_answer(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as answer:
        return bool(answer.status == 200)


@dataclass
class FlagWatcher(BackgroundWatch):
    """Watches the nodes' reboot-required labels (what the detectors write), with the time seen."""

    api: client.ApiClient
    changes: list[tuple[float, str, bool, str]] = field(default_factory=list)

    def _watch(self) -> None:
        core = client.CoreV1Api(self.api)
        state: dict[str, bool] = {}
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    core.list_node, label_selector="type=kwok", timeout_seconds=2
                ):
                    node = event["object"]
                    labels = node.metadata.labels or {}
                    annotations = node.metadata.annotations or {}
                    flagged = (
                        labels.get(contract.REBOOT_REQUIRED_LABEL) == contract.REBOOT_REQUIRED_VALUE
                    )
                    name = node.metadata.name
                    if state.get(name, False) != flagged:
                        state[name] = flagged
                        reason = annotations.get(contract.REBOOT_REASON_ANNOTATION, "")
                        self.changes.append((time.monotonic(), name, flagged, reason))
                    if self._stop.is_set():
                        break
            except Exception:
                time.sleep(0.2)
            finally:
                stream.stop()


class Rollout:
    """Follows the rollout through the lock's versions, the nodes' flags and the window status."""

    def __init__(
        self,
        api: client.ApiClient,
        observer: LockObserver,
        flags: FlagWatcher,
        zones: dict[str, str],
        flagged: list[str],
        printer: Printer,
    ) -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.observer = observer
        self.flags = flags
        self.zones = zones
        self.flagged = flagged
        self.printer = printer
        self.times = {name: NodeTimes(zone=zones[name]) for name in flagged}
        self.started = time.monotonic()
        self._seen_snapshots = 0
        self._seen_flag_changes = 0
        self._phase: dict[str, str] = {}
        self._lock_now: LockSnapshot | None = None  # the last lock version handled
        self._pending_shown: set[str] = set()
        self._labelled: set[str] = set()
        self._last_status_poll = 0.0

    # -- progress ------------------------------------------------------------------------------

    def done_count(self) -> int:
        return sum(1 for times in self.times.values() if times.result == "Rebooted")

    def finished(self) -> bool:
        """Every flagged node rebooted and its detector cleared the flag."""
        return all(
            times.result == "Rebooted" and times.cleared is not None
            for times in self.times.values()
        )

    def busy(self) -> int:
        """The nodes the lock holds for the window, in its last version handled: what the
        budget limits (a count kept from transitions would add a node admitted in the same
        write that released another before that release is handled)."""
        return len(self._lock_now.in_maintenance(WINDOW)) if self._lock_now else 0

    def _progress(self) -> str:
        return f"[done {self.done_count():>2}/{len(self.flagged)} | busy {self.busy()}]"

    def _emit(self, node: str, phase: str, reason: str) -> None:
        zone = self.zones.get(node, "?")
        self.printer.transition(node, zone, phase, reason, self._progress())

    # -- sources -------------------------------------------------------------------------------

    def mark_flagged(self, name: str) -> None:
        """The moment its sentinel file was created: what `queued` is measured from."""
        self.times[name].flagged = time.monotonic()

    def poll(self) -> None:
        """Handle what the watchers saw since the last call; read the window's status."""
        self.replay()
        now = time.monotonic()
        if now - self._last_status_poll >= 0.5:
            self._last_status_poll = now
            self._read_window_status()

    def replay(self) -> None:
        """Handle what the lock and the flag watchers saw since the last call, oldest first."""
        snapshots = self.observer.snapshots[self._seen_snapshots :]
        self._seen_snapshots += len(snapshots)
        changes = self.flags.changes[self._seen_flag_changes :]
        self._seen_flag_changes += len(changes)
        happenings: list[tuple[float, int, Any]] = [(s.at, 1, s) for s in snapshots]
        happenings += [(change[0], 0, change) for change in changes]
        for _, kind, item in sorted(happenings, key=lambda entry: (entry[0], entry[1])):
            if kind == 0:
                self._flag_changed(*item)
            else:
                self._lock_version(item)

    def _lock_version(self, snapshot: LockSnapshot) -> None:
        """The transitions one lock write made, each line with that write's counter: first the
        slots it freed, then the nodes it admitted or moved on."""
        self._lock_now = snapshot
        for node in [name for name in self._phase if name not in snapshot.leases]:
            del self._phase[node]
            result, message = self._completion(snapshot, node)
            if node in self.times:
                self.times[node].finished = snapshot.at
                self.times[node].result = result
            phase = "Done" if result == "Rebooted" else "Pending"
            self._emit(node, phase, f"{result}: {message}" if result else "slot released")
        for node, lease in sorted(snapshot.leases.items()):
            phase = str(lease.get("phase", ""))
            if self._phase.get(node) == phase:
                continue
            self._phase[node] = phase
            if node in self.times:
                self.times[node].phases.setdefault(phase, snapshot.at)
            self._emit(node, phase, str(lease.get("message") or ""))

    @staticmethod
    def _completion(snapshot: LockSnapshot, node: str) -> tuple[str, str]:
        """The brain's record of how the node's maintenance ended (the lock keeps a history,
        written by the same write that freed the slot)."""
        record = snapshot.windows.get(WINDOW) or {}
        completed = record.get("completed") if isinstance(record, dict) else None
        for entry in reversed(completed if isinstance(completed, list) else []):
            if entry.get("node") == node:
                return str(entry.get("result", "")), str(entry.get("message", ""))
        return "", ""

    def _flag_changed(self, at: float, name: str, flagged: bool, reason: str) -> None:
        """The detectors' work: the reboot-required label appears, and goes after the reboot."""
        if flagged and name not in self._labelled:
            self._labelled.add(name)
            self._emit(name, "Flagged", f"detector: sentinel file present ({reason})")
        elif not flagged and name in self._labelled:
            self._labelled.discard(name)
            if name in self.times:
                self.times[name].cleared = at
            self._emit(name, "Unflagged", "detector: sentinel file gone (the new kernel booted)")

    def _read_window_status(self) -> None:
        """Why a flagged node waits (batch, zone budget), once per node."""
        try:
            window = self.custom.get_cluster_custom_object(*WINDOW_API, WINDOW)
        except client.exceptions.ApiException:
            return
        for entry in window.get("status", {}).get("nodes", []):
            name = entry.get("name", "")
            if entry.get("phase") == "Pending" and name not in self._pending_shown:
                if name in self._phase:
                    continue
                self._pending_shown.add(name)
                self._emit(name, "Pending", str(entry.get("message", "")))


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:5.1f}s"


def summarize(rollout: Rollout, observer: LockObserver, options: Options) -> dict[str, Any]:
    """The figures of the run: per-node times, wall time against the ideal, the peaks."""
    rows = []
    for name in rollout.flagged:
        times = rollout.times[name]
        rows.append(
            {
                "node": name,
                "zone": times.zone,
                "result": times.result or "unfinished",
                "queued": times.queued,
                "drain": times.drain,
                "reboot": times.reboot,
                "hand_off": times.hand_off,
                "flag_cleared": times.cleared is not None,
            }
        )
    starts = [t.flagged for t in rollout.times.values() if t.flagged is not None]
    ends = [t.finished for t in rollout.times.values() if t.finished is not None]
    wall = (max(ends) - min(starts)) if starts and ends else None
    work = [
        (t.drain or 0.0) + (t.reboot or 0.0)
        for t in rollout.times.values()
        if t.result == "Rebooted"
    ]
    ideal = sum(work) / options.concurrency if work else None
    return {
        "nodes": rows,
        "flagged": len(rollout.flagged),
        "rebooted": sum(1 for row in rows if row["result"] == "Rebooted"),
        "wall_seconds": wall,
        "ideal_seconds": ideal,
        "concurrency": options.concurrency,
        "budget": options.budget,
        "per_zone_budget": options.per_zone,
        "peak_in_maintenance": observer.peak(WINDOW),
        "peak_per_zone": observer.peak_per_zone(),
        "lock_versions_seen": len(observer.snapshots),
    }


def print_summary(summary: dict[str, Any], printer: Printer) -> None:
    say = printer.say
    say("")
    say("Summary")
    say(
        f"  {'node':<8} {'zone':<7} {'result':<10} {'queued':>7} {'drain':>7} "
        f"{'reboot':>7} {'hand-off':>8}"
    )
    for row in summary["nodes"]:
        say(
            f"  {row['node']:<8} {row['zone']:<7} {row['result']:<10} "
            f"{_seconds(row['queued']):>7} {_seconds(row['drain']):>7} "
            f"{_seconds(row['reboot']):>7} {_seconds(row['hand_off']):>8}"
        )
    say("  queued: sentinel file -> admitted; drain: cordon + evictions;")
    say("  reboot: Job -> node back with a new boot ID; hand-off: health gate -> slot released.")
    wall, ideal = summary["wall_seconds"], summary["ideal_seconds"]
    say(f"  rebooted: {summary['rebooted']}/{summary['flagged']} flagged nodes")
    if wall is not None and ideal is not None:
        say(
            f"  wall time: {wall:.1f}s  ideal N x (drain + reboot) / {summary['concurrency']}: "
            f"{ideal:.1f}s  (x{wall / ideal:.2f})"
            if ideal
            else f"  wall time: {wall:.1f}s"
        )
    say(
        f"  most nodes in maintenance at once: {summary['peak_in_maintenance']} "
        f"(budget {summary['budget']}); most in one zone: {summary['peak_per_zone']} "
        f"(budget {summary['per_zone_budget']}); {summary['lock_versions_seen']} lock versions seen"
    )


def start_serving(
    makers: list[Callable[[], BrainProcess | DetectorProcess]], components: list[Component]
) -> list[BrainProcess | DetectorProcess]:
    """Start every process and wait until each serves its metrics, all at once.

    Each picks a free port just before it starts; another program can take that port in
    between (the machine is shared), so a process that dies at start is started again, with a
    new port, a few times.
    """
    started: list[BrainProcess | DetectorProcess] = []
    for make in makers:
        started.append(make())
        components.append(started[-1])
        started[-1].start()
    for index, make in enumerate(makers):
        for attempt in range(3):
            process = started[index]
            try:
                port = process.metrics_port
                process.wait_until(functools.partial(_metrics_answer, port), "serving metrics")
                break
            except ComponentError:
                if attempt == 2 or process.running:
                    raise
                process.stop()  # forgets the dead process: it is not checked any more
                started[index] = make()
                components.append(started[index])
                started[index].start()
    return started


def _check_alive(components: list[Component]) -> None:
    for component in components:
        if component.process is not None and not component.running:
            raise component.failure("stopped unexpectedly")


def _terminate(_number: int, _frame: FrameType | None) -> None:
    """SIGTERM is handled like Ctrl-C: clean up and leave."""
    raise KeyboardInterrupt


def run(options: Options) -> int:
    """The whole demo; every process it starts is stopped before it returns."""
    printer = Printer(options.quiet)
    workdir = Path(tempfile.mkdtemp(prefix="pitstop-demo-"))
    keep_files = options.keep_logs
    # Ctrl-C works even when started with SIGINT ignored (a background job of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    plane: ControlPlane | None = None
    components: list[Component] = []
    with contextlib.ExitStack() as background:
        try:
            printer.say(f"Pitstop demo: work folder {workdir}")
            printer.say("Starting the local control plane (builds the binaries on first use)...")
            (workdir / "cluster").mkdir()
            plane = ControlPlane(workdir=workdir / "cluster", name="pitstop-demo")
            plane.start()
            api = _api_client(plane)
            background.callback(api.close)
            install_pitstop_api(plane, NAMESPACE, JOB_NAMESPACE)

            zone_names = [f"zone-{chr(ord('a') + index)}" for index in range(options.zones)]
            names = [f"node-{index + 1:02d}" for index in range(options.nodes)]
            zones = {name: zone_names[index % len(zone_names)] for index, name in enumerate(names)}
            printer.say(f"Creating {options.nodes} kwok nodes in {options.zones} zones...")
            for name in names:
                create_nodes(api, [name], zone=zones[name])
            expected_pods = create_workloads(api, options.nodes)
            wait_for(
                lambda: len(running_pods(api, APPS_NAMESPACE)) >= expected_pods,
                f"{expected_pods} workload pods running",
                timeout=120,
                interval=0.5,
            )
            printer.paragraph(
                f"Workloads in namespace {APPS_NAMESPACE}: {expected_pods} pods (Deployments web "
                "and checkout with PDBs, DaemonSet node-agent, quorum app orders-db: 3 replicas, "
                "PDB maxUnavailable 1)"
            )

            logs = workdir / "logs"
            sentinels: dict[str, Path] = {}
            for name in names:
                folder = workdir / "hosts" / name
                folder.mkdir(parents=True)
                sentinels[name] = folder / SENTINEL_NAME
            makers: list[Callable[[], BrainProcess | DetectorProcess]] = [
                functools.partial(
                    BrainProcess, plane, logs / "brain.log", NAMESPACE, JOB_NAMESPACE, LOCK_NAME
                )
            ]
            makers += [
                functools.partial(
                    DetectorProcess, plane, name, sentinels[name], logs / f"{name}.log"
                )
                for name in names
            ]
            started = start_serving(makers, components)
            brain = started[0]
            detectors = started[1:]
            printer.say(f"Started the brain and {len(detectors)} detectors (logs in {logs})")

            plane.kubectl(
                "apply", "-f", "-", input=json.dumps(window_body(options, datetime.now(UTC)))
            )
            kubectl = plane.binaries["kubectl"]
            printer.say("")
            printer.say("Watch from another shell:")
            printer.say(f"  export KUBECONFIG={plane.kubeconfig} PATH={kubectl.parent}:$PATH")
            printer.say("  kubectl get nmw -w")
            printer.say(f"  kubectl describe nmw {WINDOW}")
            printer.say(f"  kubectl get nodes -L {ZONE_LABEL},{contract.REBOOT_REQUIRED_LABEL} -w")
            printer.say(f"  curl -s http://127.0.0.1:{brain.metrics_port}/metrics | grep pitstop")
            printer.say("")

            flagged = names[: options.flagged_count]
            slow = flagged[1] if len(flagged) > 1 else (flagged[0] if flagged else "")
            default = HostBehaviour(options.reboot_delay, options.down_seconds)
            behaviours = {slow: HostBehaviour(options.reboot_delay, options.slow_down_seconds)}
            observer = background.enter_context(
                LockObserver(api, NAMESPACE, LOCK_NAME, zones=zones)
            )

            # Host lines have no progress column (as wide as "[done  0/8 | busy 2]").
            no_progress = " " * len(f"[done {0:>2}/{len(flagged)} | busy {options.budget}]")

            def host_rebooted(record: RebootRecord) -> None:
                if not options.quiet:
                    down = record.finished - record.started
                    printer.transition(
                        record.node,
                        zones.get(record.node, "?"),
                        "(host)",
                        f"booted again after {down:.1f}s, bootID {record.boot_id_after[:8]}",
                        no_progress,
                    )

            background.enter_context(
                HostSimulator(
                    api,
                    JOB_NAMESPACE,
                    sentinels=sentinels,
                    default=default,
                    behaviours=behaviours,
                    jitter_seconds=options.jitter,
                    on_reboot=host_rebooted,
                )
            )
            printer.paragraph(
                f"Window {WINDOW}: open now, at most {options.budget} nodes at once and "
                f"{options.per_zone} per zone. Hosts reboot {options.reboot_delay:.0f}s after "
                f"their Job (+ up to {options.jitter:.1f}s), down {options.down_seconds:.0f}s; "
                f"{slow or 'none'} is slow (down {options.slow_down_seconds:.0f}s)."
            )
            printer.say(f"Flagging {len(flagged)} nodes: creating their sentinel files...")
            printer.say("")
            flags = background.enter_context(FlagWatcher(api))
            rollout = Rollout(api, observer, flags, zones, flagged, printer)
            printer.started = rollout.started
            for index, name in enumerate(flagged):
                sentinels[name].write_text(f"kernel 6.8.0-{50 + index} installed\n")
                rollout.mark_flagged(name)

            deadline = time.monotonic() + options.timeout
            while not rollout.finished():
                if time.monotonic() > deadline:
                    printer.say(f"Timed out after {options.timeout:.0f}s; logs in {logs}")
                    keep_files = True
                    break
                _check_alive(components)
                rollout.poll()
                time.sleep(0.2)
            time.sleep(0.5)  # the last lock versions
            rollout.poll()

            summary = summarize(rollout, observer, options)
            summary["work_folder"] = str(workdir)
            print_summary(summary, printer)
            over_budget = (
                summary["peak_in_maintenance"] > options.budget
                or summary["peak_per_zone"] > options.per_zone
            )
            complete = summary["rebooted"] == summary["flagged"] and rollout.finished()
            summary["ok"] = complete and not over_budget
            if options.summary_json is not None:
                options.summary_json.write_text(json.dumps(summary, indent=2, default=str))
            if over_budget:
                printer.say("FAILED: the budget was exceeded")
            elif not complete:
                printer.say("FAILED: not every flagged node was rebooted")
            if over_budget or not complete:
                keep_files = True
                return 1
            if options.keep:
                try:
                    printer.say("")
                    printer.say(
                        "The cluster keeps running (--keep); Ctrl-C stops it. Flag more with:"
                    )
                    printer.say(f"  touch {workdir / 'hosts' / names[-1] / SENTINEL_NAME}")
                    while True:
                        _check_alive(components)
                        rollout.poll()
                        time.sleep(0.2)
                except KeyboardInterrupt:
                    printer.say("")
                    return 0  # Ctrl-C is how --keep ends: not a failure
            return 0
        except KeyboardInterrupt:
            printer.say("\nInterrupted.")
            return 130
        except Exception as error:
            keep_files = True
            printer.say(f"The demo failed: {error}")
            return 1
        finally:
            # A second Ctrl-C must not cut the clean-up short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            printer.say("Stopping everything...")
            printer.quiet = True  # in-flight simulated reboots may still finish: not news
            stopping = time.monotonic()
            background.close()
            for component in reversed(components):
                component.stop()
            if plane is not None:
                plane.stop()
            if keep_files:
                printer.say(f"Logs kept in {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
            printer.say(f"Stopped ({time.monotonic() - stopping:.1f}s).")


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m localcluster.demo",
        description="A safe rolling reboot on a local simulated cluster, to watch.",
    )
    parser.add_argument("--nodes", type=int, default=12, help="kwok nodes (default 12)")
    parser.add_argument("--zones", type=int, default=3, help="zones to spread them over")
    parser.add_argument("--budget", type=int, default=2, help="window maxUnavailable")
    parser.add_argument("--per-zone", type=int, default=1, help="window topology maxUnavailable")
    parser.add_argument("--flagged", type=int, help="nodes to flag (default two thirds)")
    parser.add_argument("--keep", action="store_true", help="keep the cluster until Ctrl-C")
    parser.add_argument("--keep-logs", action="store_true", help="keep the logs of a good run")
    parser.add_argument("--quiet", action="store_true", help="no transition lines, the summary")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after (seconds)")
    parser.add_argument("--summary-json", type=Path, help="also write the summary here")
    arguments = parser.parse_args(argv)
    for name in ("nodes", "zones", "budget", "per_zone"):
        if getattr(arguments, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return Options(
        nodes=arguments.nodes,
        zones=min(arguments.zones, arguments.nodes),
        budget=arguments.budget,
        per_zone=arguments.per_zone,
        flagged=arguments.flagged,
        keep=arguments.keep,
        keep_logs=arguments.keep_logs,
        quiet=arguments.quiet,
        timeout=arguments.timeout,
        summary_json=arguments.summary_json,
    )


def main(argv: list[str] | None = None) -> int:
    return run(parse_options(argv))


if __name__ == "__main__":
    raise SystemExit(main())
