"""The brain at scale: thousands of kwok nodes, one window governing all, a rollout of K of them.

Starts a private local control plane (kube-apiserver with an audit log of the brain's own user
`pitstop-brain`), creates N kwok nodes in Z zones in bulk (concurrent creates, each Node created
with its first boot ID; kwok keeps them Ready with Lease heartbeats), one NodesMaintenanceWindow
governing all of them (always open, `maxUnavailable` M), a simulated host per node (one watch on
reboot Jobs: a host "reboots" when its Job appears, then clears its flag), and starts the brain
as a real process. Then, in phases, each with a timeout (a stuck brain ends the phase: the JSON
gets what was measured and an "error" key):

1. startup: brain start -> first window status that counts every governed node;
2. idle (`--idle-seconds`): the brain's CPU, RSS and API requests with nothing flagged;
3. churn (`--churn-seconds`): node status heartbeats patched at N/300 per second, as
   kubelets do (one every 5 minutes per node), and the brain's CPU meanwhile;
4. rollout: K nodes flagged at once; time to the first cordon, to the limit M in maintenance,
   to all K rebooted and released; the hand-off time (a node leaves the lock -> the next one is
   admitted, while nodes wait); `pitstop plan` timed once during the rollout.

The cluster is made quiet before the brain starts, as a settled real one is: the controller
manager's TTL controller is off (it re-annotates every Node whenever the cluster's size crosses
a threshold), the manager runs at 500 requests a second (new nodes' not-ready taints come off at
once), kwok's status heartbeats are off (kwok sends them 600-610 s after a node's last status
write, so nodes made together beat together; phase 3 plays them evenly), and the brain starts
once no Node changed for 3 s. Past 1,000 nodes kwok's node Lease is lengthened to N/25 s.

Measured from outside the brain: its CPU (percent of one core) and RSS from /proc/<pid>/stat and
/proc/<pid>/status (children included); its requests from the API server's audit log (user
`pitstop-brain`, one RequestReceived line per request, watches included); the lock ConfigMap
and the window by watches (every version: the highest number of nodes in maintenance, peak
object sizes), Nodes by one watch (cordons). A benchmark: it prints figures and asserts nothing.

    uv run python bench/scale.py --nodes 1000 --flag 250 --max-unavailable 100 --json
    uv run python bench/scale.py --nodes 20 --flag 3 --max-unavailable 2 --idle-seconds 5 \\
        --churn-seconds 5 --json

With `--json` the last line of the output is one JSON object (seconds, MiB, percent of one
core); progress goes to stderr. `--keep-logs DIR` copies the brain's log and the audit log there
(and, with `--py-spy PATH`, a py-spy profile of the brain per phase, collapsed stacks). Keys:
nodes, limit, flagged; brain_start_to_first_status_s; brain_idle_cpu_pct, brain_churn_cpu_pct,
brain_rollout_cpu_pct; brain_idle_rss_mib, brain_peak_rss_mib; idle_requests_per_s (and what
they were); flag_to_first_cordon_s, time_to_limit_s, rollout_s, handoff_p50_s/p90_s, rebooted,
max_in_maintenance, max_cordoned, lock_phase_seconds (p50/max per lock phase);
requests_per_reboot_excluding_evictions, rollout_requests_by_kind, rollout_error_codes;
window_object_bytes, lock_object_bytes (peaks); plan_cli_s (plan_cli_cpu_s: its CPU);
status_done_count; the bench's own times (control_plane_start_s, nodes_ready_s,
nodes_settled_s, bench_s), load averages; "error" when a phase did not finish.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch import watch as kubernetes_watch

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from localcluster.controlplane import (  # noqa: E402
    KWOK_NODE_ANNOTATION,
    KWOK_NODE_VALUE,
    ControlPlane,
)
from localcluster.hosts import HostBehaviour, HostSimulator  # noqa: E402
from localcluster.nodes import KWOK_TAINT, ZONE_LABEL  # noqa: E402
from localcluster.observe import IN_MAINTENANCE  # noqa: E402
from localcluster.pitstop_processes import BrainProcess, install_pitstop_api  # noqa: E402
from pitstop import contract  # noqa: E402

BRAIN_USER = "pitstop-brain"
LABEL = "pitstop-scale/governed"
WINDOW = "scale"
NAMESPACE, JOB_NAMESPACE = "pitstop-scale", "pitstop-scale-reboot"
LOCK = "pitstop-lock"
WINDOW_PATH = "/apis/pitstop.dev/v1alpha1/nodesmaintenancewindows"
# How many requests the bench itself sends at once (node creation, flagging, heartbeats).
PARALLEL_REQUESTS = 16
STRATEGIC_MERGE = "application/strategic-merge-patch+json"
EMPTY_NODE_INFO = dict.fromkeys(
    (
        "architecture",
        "containerRuntimeVersion",
        "kernelVersion",
        "kubeProxyVersion",
        "kubeletVersion",
        "machineID",
        "operatingSystem",
        "osImage",
        "systemUUID",
    ),
    "",
)


def say(message: str) -> None:
    """Progress, on stderr: stdout's last line is the result."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class PhaseError(RuntimeError):
    """A phase did not finish in time (or the brain died): the run ends with what it measured."""


def wait_until(
    check: Callable[[], bool],
    what: str,
    timeout: float,
    brain: BrainProcess | None = None,
    interval: float = 0.05,
) -> float:
    """Poll `check` (cheap: it reads what the watches keep) until true; the monotonic time."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return time.monotonic()
        if brain is not None and not brain.running:
            raise PhaseError(f"the brain exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise PhaseError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def api_client_for(plane: ControlPlane) -> client.ApiClient:
    """The bench's own client (admin): a connection for each of its parallel requests."""
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(plane.kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = 4 * PARALLEL_REQUESTS
    return client.ApiClient(configuration)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- watches ---------------------------------------------------------------------------------


class RawWatch:
    """One watch in a daemon thread, on raw JSON (no model objects: thousands of Nodes), resumed
    from the last resourceVersion when the server ends it; a 410 starts again from a list."""

    def __init__(
        self, start_watch: Callable[..., Any], seen: Callable[[str, dict[str, Any], int], None]
    ):
        self._start_watch = start_watch
        self._seen = seen
        self._stop = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, name="bench-watch", daemon=True)

    def __enter__(self) -> RawWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self._response.shutdown()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        version = ""
        while not self._stop.is_set():
            try:
                extra = {"resource_version": version} if version else {}
                self._response = self._start_watch(
                    watch=True,
                    allow_watch_bookmarks=True,
                    timeout_seconds=300,
                    _preload_content=False,
                    **extra,
                )
                for line in kubernetes_watch.iter_resp_lines(self._response):
                    if not line:
                        continue
                    event = json.loads(line)
                    kind, body = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        if body.get("code") == 410:
                            version = ""
                        break
                    version = (body.get("metadata") or {}).get("resourceVersion") or version
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        self._seen(kind, body, len(line))
            except Exception as error:
                if not self._stop.is_set():
                    say(f"watch ended ({error!r}); watching again")
                    time.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    self._response.close()  # its connection is not reused half read
                    self._response.release_conn()


@dataclass
class NodeState:
    ready: bool
    unschedulable: bool
    boot_id: str
    flagged: bool


@dataclass
class Nodes:
    """Every governed Node as one watch sees it, and when each was first cordoned."""

    states: dict[str, NodeState] = field(default_factory=dict)
    cordoned_at: dict[str, float] = field(default_factory=dict)  # latest cordon, monotonic
    first_cordon_after: float = 0.0  # only cordons after this moment count (the flagging)
    first_cordon: float | None = None
    max_cordoned: int = 0
    # When each Node event came (monotonic), and who wrote that version (the manager of the
    # newest managedFields entry): what the brain's Node watch had to digest.
    events: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self, kind: str, node: dict[str, Any], _: int) -> None:
        name = node["metadata"]["name"]
        with self.lock:
            fields = node["metadata"].get("managedFields") or [{}]
            newest = max(fields, key=lambda entry: str(entry.get("time") or ""))
            writer = f"{newest.get('manager')} {newest.get('subresource') or ''}".strip()
            self.events.append((time.monotonic(), writer))
            if kind == "DELETED":
                self.states.pop(name, None)
                return
            status = node.get("status") or {}
            ready = any(
                condition.get("type") == "Ready" and condition.get("status") == "True"
                for condition in status.get("conditions") or []
            )
            unschedulable = bool((node.get("spec") or {}).get("unschedulable"))
            labels = node["metadata"].get("labels") or {}
            state = NodeState(
                ready=ready,
                unschedulable=unschedulable,
                boot_id=str((status.get("nodeInfo") or {}).get("bootID") or ""),
                flagged=labels.get(contract.REBOOT_REQUIRED_LABEL)
                == contract.REBOOT_REQUIRED_VALUE,
            )
            before = self.states.get(name)
            self.states[name] = state
            if unschedulable and not (before and before.unschedulable):
                moment = time.monotonic()
                self.cordoned_at[name] = moment
                if self.first_cordon_after and self.first_cordon is None:
                    self.first_cordon = moment
            cordoned = sum(1 for each in self.states.values() if each.unschedulable)
            self.max_cordoned = max(self.max_cordoned, cordoned)

    def events_between(self, start: float, end: float) -> Counter[str]:
        """Node events in [start, end), by writer."""
        with self.lock:
            return Counter(writer for moment, writer in self.events if start <= moment < end)

    def count(self, check: Callable[[NodeState], bool]) -> int:
        with self.lock:
            return sum(1 for state in self.states.values() if check(state))

    def snapshot(self) -> dict[str, NodeState]:
        with self.lock:
            return dict(self.states)


@dataclass
class LockVersion:
    at: float  # monotonic
    holders: frozenset[str]  # nodes holding a slot
    in_maintenance: int
    phases: dict[str, str] = field(default_factory=dict)  # node -> its phase


@dataclass
class LockWatch:
    """Every version of the lock ConfigMap: who holds a slot, how many are in maintenance."""

    versions: list[LockVersion] = field(default_factory=list)
    peak_bytes: int = 0
    parse_errors: int = 0

    def seen(self, kind: str, config_map: dict[str, Any], _: int) -> None:
        self.peak_bytes = max(self.peak_bytes, len(json.dumps(config_map, separators=(",", ":"))))
        if kind == "DELETED":
            self.versions.append(LockVersion(time.monotonic(), frozenset(), 0))
            return
        try:
            state = json.loads((config_map.get("data") or {}).get("state.json") or "{}")
        except ValueError:
            self.parse_errors += 1
            return
        leases = state.get("nodes") or {}
        in_maintenance = sum(
            1 for lease in leases.values() if (lease or {}).get("phase") in IN_MAINTENANCE
        )
        phases = {name: str((lease or {}).get("phase")) for name, lease in leases.items()}
        self.versions.append(
            LockVersion(time.monotonic(), frozenset(leases), in_maintenance, phases)
        )

    def latest(self) -> LockVersion:
        return self.versions[-1] if self.versions else LockVersion(0.0, frozenset(), 0)

    def since(self, moment: float) -> list[LockVersion]:
        return [version for version in list(self.versions) if version.at >= moment]


@dataclass
class WindowVersion:
    at: float
    counts: dict[str, int]


@dataclass
class WindowWatch:
    """Every version of the window: its status counts, and its peak size."""

    versions: list[WindowVersion] = field(default_factory=list)
    peak_bytes: int = 0

    def seen(self, kind: str, window: dict[str, Any], _: int) -> None:
        self.peak_bytes = max(self.peak_bytes, len(json.dumps(window, separators=(",", ":"))))
        counts = dict((window.get("status") or {}).get("counts") or {})
        self.versions.append(WindowVersion(time.monotonic(), counts))

    def counts(self) -> dict[str, int]:
        return self.versions[-1].counts if self.versions else {}


# -- the brain process from outside ----------------------------------------------------------


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _process_tree(root: int) -> list[int]:
    """The process and its descendants (from /proc: parent of each)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(parent, []).append(int(entry))
    tree, queue = [], [root]
    while queue:
        pid = queue.pop()
        tree.append(pid)
        queue.extend(children.get(pid, []))
    return tree


def cpu_seconds(root: int) -> float:
    """User + system CPU of the process and its descendants (and their waited-for children)."""
    total = 0
    for pid in _process_tree(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / CLOCK_TICKS


def rss_mib(root: int) -> float:
    total_kib = 0
    for pid in _process_tree(root):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
    return total_kib / 1024


@dataclass
class Sampler:
    """The brain's RSS every half second (peak, and the samples of each phase)."""

    pid: int
    samples: list[tuple[float, float]] = field(default_factory=list)  # (monotonic, MiB)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Sampler:
        threading.Thread(target=self._run, name="bench-sampler", daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            if Path(f"/proc/{self.pid}").exists():
                self.samples.append((time.monotonic(), rss_mib(self.pid)))

    def peak(self) -> float:
        return max((mib for _, mib in self.samples), default=0.0)

    def mean_between(self, start: float, end: float) -> float:
        values = [mib for at, mib in self.samples if start <= at <= end]
        return sum(values) / len(values) if values else 0.0


@dataclass
class CpuMeter:
    """CPU percent of one core of the brain between start() and stop()."""

    pid: int
    wall: float = 0.0
    cpu: float = 0.0

    def start(self) -> None:
        self.wall, self.cpu = time.monotonic(), cpu_seconds(self.pid)

    def percent(self) -> float:
        elapsed = time.monotonic() - self.wall
        return 100.0 * (cpu_seconds(self.pid) - self.cpu) / elapsed if elapsed > 0 else 0.0


# -- the audit log ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditRequest:
    at: float  # epoch seconds, when the API server received it
    verb: str
    resource: str  # resource/subresource, or the path of a non-resource request
    code: int  # the answer's status code (0: none logged yet, e.g. a watch still open)
    cordon: bool = False  # a Node patch that sets spec.unschedulable true


def read_audit_log(path: Path, user: str) -> list[AuditRequest]:
    """Every request of `user`: its RequestReceived line, with the code of its ResponseComplete."""
    received: dict[str, tuple[float, str, str]] = {}
    codes: dict[str, int] = {}
    cordons: set[str] = set()
    if not path.exists():
        return []
    with path.open() as lines:
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if (event.get("user") or {}).get("username") != user:
                continue
            audit_id = event.get("auditID", "")
            if is_cordon(event.get("requestObject")):
                cordons.add(audit_id)
            if event.get("stage") == "RequestReceived":
                reference = event.get("objectRef") or {}
                resource = reference.get("resource") or event.get("requestURI", "").split("?")[0]
                if reference.get("subresource"):
                    resource += "/" + reference["subresource"]
                at = datetime.fromisoformat(event["requestReceivedTimestamp"]).timestamp()
                received[audit_id] = (at, event.get("verb", ""), resource)
            elif event.get("stage") in ("ResponseComplete", "Panic"):
                codes[audit_id] = int((event.get("responseStatus") or {}).get("code") or 0)
    return [
        AuditRequest(at, verb, resource, codes.get(audit_id, 0), audit_id in cordons)
        for audit_id, (at, verb, resource) in received.items()
    ]


def is_cordon(body: Any) -> bool:
    """A patch body (merge patch: a dict; JSON patch: a list of operations) that cordons."""
    if isinstance(body, dict):
        return (body.get("spec") or {}).get("unschedulable") is True
    if isinstance(body, list):
        return any(
            isinstance(operation, dict)
            and operation.get("path") == "/spec/unschedulable"
            and operation.get("value") is True
            for operation in body
        )
    return False


def requests_between(requests: list[AuditRequest], start: float, end: float) -> list[AuditRequest]:
    return [request for request in requests if start <= request.at < end]


def describe_requests(requests: list[AuditRequest]) -> dict[str, int]:
    """`verb resource` -> count, most frequent first (the top 15)."""
    counted = Counter(f"{request.verb} {request.resource}" for request in requests)
    return dict(counted.most_common(15))


# -- the cluster -----------------------------------------------------------------------------


def finish(response: Any) -> None:
    """Read a raw response to its end, so its connection goes back to the pool clean."""
    _ = response.data
    response.release_conn()


def node_names(count: int) -> list[str]:
    return [f"scale-{number:05d}" for number in range(count)]


def create_nodes_in_bulk(api: client.ApiClient, names: list[str], zones: int) -> None:
    """Create kwok Nodes concurrently, each born with its boot ID (kwok's node-initialize stage
    keeps a boot ID it finds), so one request per node; kwok then makes them Ready."""
    core = client.CoreV1Api(api)

    def create(index_and_name: tuple[int, str]) -> None:
        index, name = index_and_name
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "type": "kwok",
                    # What the node lifecycle controller would add, one update per node.
                    "beta.kubernetes.io/os": "linux",
                    "beta.kubernetes.io/arch": "amd64",
                    ZONE_LABEL: f"zone-{index % zones}",
                    LABEL: "on",
                },
                "annotations": {KWOK_NODE_ANNOTATION: KWOK_NODE_VALUE},
            },
            "spec": {"taints": [KWOK_TAINT]},
            # The client's model wants every nodeInfo field; kwok fills in the empty ones.
            "status": {"nodeInfo": {**EMPTY_NODE_INFO, "bootID": str(uuid.uuid4())}},
        }
        for attempt in range(5):
            try:
                finish(core.create_node(body, _preload_content=False))
                return
            except ApiException as error:
                if error.status == 409:
                    return
                if attempt == 4 or error.status not in (429, 500, 503, 504):
                    raise
                time.sleep(0.5 * (attempt + 1))

    with ThreadPoolExecutor(PARALLEL_REQUESTS) as pool:
        list(pool.map(create, enumerate(names)))


def patch_in_parallel(
    api: client.ApiClient, names: list[str], body: Callable[[str], dict[str, Any]], status: bool
) -> None:
    core = client.CoreV1Api(api)
    call = core.patch_node_status if status else core.patch_node

    def patch(name: str) -> None:
        finish(call(name, body(name), _preload_content=False, _content_type=STRATEGIC_MERGE))

    with ThreadPoolExecutor(PARALLEL_REQUESTS) as pool:
        list(pool.map(patch, names))


def flag_body(name: str) -> dict[str, Any]:
    """What a detector writes when its node needs a reboot."""
    return {
        "metadata": {
            "labels": {contract.REBOOT_REQUIRED_LABEL: contract.REBOOT_REQUIRED_VALUE},
            "annotations": {
                contract.REBOOT_REQUIRED_SINCE_ANNOTATION: now_rfc3339(),
                contract.REBOOT_REASON_ANNOTATION: "scale bench",
            },
        }
    }


def heartbeat_body(_: str) -> dict[str, Any]:
    """What a kubelet's status update changes on a quiet node: the conditions' heartbeat."""
    return {"status": {"conditions": [{"type": "Ready", "lastHeartbeatTime": now_rfc3339()}]}}


@contextlib.contextmanager
def heartbeats(api: client.ApiClient, names: list[str], per_second: float) -> Iterator[list[int]]:
    """Patch node status heartbeats at `per_second`, round robin, until the block ends; yields
    [patches sent, patches that fell behind the pace]."""
    stop = threading.Event()
    counts = [0, 0]

    def run() -> None:
        core = client.CoreV1Api(api)
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            while not stop.is_set():
                due = started + counts[0] / per_second
                pause = due - time.monotonic()
                if pause > 0:
                    stop.wait(pause)
                    continue
                if pause < -1:
                    counts[1] += 1
                name = names[counts[0] % len(names)]
                counts[0] += 1
                pool.submit(
                    lambda name=name: finish(
                        core.patch_node_status(
                            name,
                            heartbeat_body(name),
                            _preload_content=False,
                            _content_type=STRATEGIC_MERGE,
                        )
                    )
                )

    thread = threading.Thread(target=run, name="bench-heartbeats", daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        stop.set()
        thread.join(timeout=30)


def window_manifest(max_unavailable: int, zone_max_unavailable: int) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "nodeSelector": {"matchLabels": {LABEL: "on"}},
        "maxUnavailable": max_unavailable,
        "drain": {"timeout": "120s"},
    }
    if zone_max_unavailable:
        spec["topology"] = {"key": ZONE_LABEL, "maxUnavailable": zone_max_unavailable}
    return {
        "apiVersion": "pitstop.dev/v1alpha1",
        "kind": "NodesMaintenanceWindow",
        "metadata": {"name": WINDOW},
        "spec": spec,  # no schedule: always open
    }


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile; None without values."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def handoffs(versions: list[LockVersion], flagged: set[str], limit: int) -> list[float]:
    """Seconds from a node leaving the lock to the next flagged node's admission, for each
    departure while flagged nodes were still waiting (the first `limit` admissions filled the
    free slots; the j-th departure hands its slot to admission limit + j)."""
    admitted: list[float] = []
    departed: list[float] = []
    seen: set[str] = set()
    previous: frozenset[str] = frozenset()
    for version in versions:
        for name in sorted(version.holders - previous):
            if name in flagged and name not in seen:
                seen.add(name)
                admitted.append(version.at)
        departed.extend(version.at for _ in previous - version.holders)
        previous = version.holders
    return [
        admitted[limit + index] - moment
        for index, moment in enumerate(departed)
        if limit + index < len(admitted)
    ]


def phase_seconds(versions: list[LockVersion]) -> dict[str, dict[str, float]]:
    """How long nodes stayed in each phase of the lock (p50 and max over nodes and visits), as
    seen by the lock watch: where a rollout's time goes."""
    durations: dict[str, list[float]] = {}
    current: dict[str, tuple[str, float]] = {}  # node -> (phase, since)
    for version in versions:
        for name, (phase, since) in list(current.items()):
            if version.phases.get(name) != phase:
                durations.setdefault(phase, []).append(version.at - since)
                del current[name]
        for name, phase in version.phases.items():
            if name not in current:
                current[name] = (phase, version.at)
    return {
        phase: {
            "p50": round(percentile(values, 0.5) or 0.0, 2),
            "max": round(max(values), 2),
            "count": len(values),
        }
        for phase, values in sorted(durations.items())
    }


def plan_command() -> list[str]:
    beside = Path(sys.executable).with_name("pitstop")
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "pitstopctl.main"]


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Run:
    arguments: argparse.Namespace
    result: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, tuple[float, float]] = field(default_factory=dict)  # epoch start, end
    moments: dict[str, tuple[float, float]] = field(default_factory=dict)  # monotonic start, end
    profiler: Path | None = None  # py-spy, to profile the brain in each phase
    profiles: Path | None = None
    pid: int = 0
    flagged_at: float = 0.0  # epoch seconds, when the flagging began

    def figure(self, key: str, value: Any, digits: int = 2) -> None:
        self.result[key] = round(value, digits) if isinstance(value, float) else value

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        say(f"phase {name}")
        started, began = time.time(), time.monotonic()
        profiling = self._profile(name)
        try:
            yield
        finally:
            self.phases[name] = (started, time.time())
            self.moments[name] = (began, time.monotonic())
            if profiling is not None:
                profiling.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    profiling.wait(60)

    def _profile(self, name: str) -> subprocess.Popen[bytes] | None:
        """py-spy sampling the brain through the phase (collapsed stacks, one file a phase)."""
        if self.profiler is None or self.profiles is None or not self.pid:
            return None
        self.profiles.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen(
            [
                str(self.profiler),
                "record",
                "--nonblocking",
                "--rate",
                "50",
                "--format",
                "raw",
                "--pid",
                str(self.pid),
                "--output",
                str(self.profiles / f"{name}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    bench = Run(arguments)
    result = bench.result
    names = node_names(arguments.nodes)
    step = max(1, arguments.nodes // max(1, arguments.flag))
    flagged = names[::step][: arguments.flag]
    limit = min(arguments.max_unavailable, len(flagged))
    bench.figure("nodes", arguments.nodes)
    bench.figure("zones", arguments.zones)
    bench.figure("flagged", len(flagged))
    bench.figure("limit", arguments.max_unavailable)
    started = time.monotonic()
    # kwok renews each node's Lease every quarter of its duration: past 1,000 nodes the Lease
    # is lengthened so the renewals stay at 100 a second (they load the API server and etcd on
    # this machine, not the brain, which does not watch Leases).
    lease = arguments.node_lease_seconds or max(40, arguments.nodes // 25)
    bench.figure("node_lease_s", lease)
    plane = ControlPlane(
        name="pitstop-scale",
        audit_users=(BRAIN_USER,),
        node_lease_seconds=lease,
        node_monitor_grace_seconds=None if lease == 40 else lease + 10,
        disabled_controllers=("ttl",),
        controller_manager_qps=500,
        kwok_node_heartbeats=False,  # the churn phase plays them, at an even rate
    )
    bench.profiler = arguments.py_spy
    bench.profiles = arguments.keep_logs / "profiles" if arguments.keep_logs else None
    brain: BrainProcess | None = None
    nodes, lock, window = Nodes(), LockWatch(), WindowWatch()
    try:
        say("starting the control plane")
        plane.start()
        api = api_client_for(plane)
        core = client.CoreV1Api(api)
        custom = client.CustomObjectsApi(api)
        install_pitstop_api(plane, NAMESPACE, JOB_NAMESPACE)
        plane.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(
                window_manifest(arguments.max_unavailable, arguments.zone_max_unavailable)
            ),
        )
        bench.figure("control_plane_start_s", time.monotonic() - started, 1)
        with contextlib.ExitStack() as stack:
            stack.enter_context(
                RawWatch(
                    lambda **query: core.list_node(label_selector=f"{LABEL}=on", **query),
                    nodes.seen,
                )
            )
            stack.enter_context(
                RawWatch(
                    lambda **query: core.list_namespaced_config_map(
                        NAMESPACE, field_selector=f"metadata.name={LOCK}", **query
                    ),
                    lock.seen,
                )
            )
            stack.enter_context(
                RawWatch(
                    lambda **query: custom.list_cluster_custom_object(
                        "pitstop.dev",
                        "v1alpha1",
                        "nodesmaintenancewindows",
                        field_selector=f"metadata.name={WINDOW}",
                        **query,
                    ),
                    window.seen,
                )
            )
            creating = time.monotonic()
            say(f"creating {arguments.nodes} nodes in {arguments.zones} zones")
            create_nodes_in_bulk(api, names, arguments.zones)
            bench.figure("nodes_created_s", time.monotonic() - creating, 1)
            wait_until(
                lambda: nodes.count(lambda state: state.ready) == arguments.nodes,
                f"{arguments.nodes} nodes Ready",
                arguments.phase_timeout,
            )
            bench.figure("nodes_ready_s", time.monotonic() - creating, 1)
            say(f"{arguments.nodes} nodes Ready after {result['nodes_ready_s']} s")
            # The controller manager then takes the not-ready taint off each new node (and
            # kwok's first Lease writes end): the brain starts in a cluster that is quiet.
            wait_until(
                lambda: not nodes.events_between(time.monotonic() - 3, time.monotonic()),
                "no Node changing for 3 s",
                arguments.phase_timeout,
                interval=0.5,
            )
            bench.figure("nodes_settled_s", time.monotonic() - creating, 1)
            host = HostBehaviour(delay_seconds=0.5, down_seconds=arguments.reboot_seconds)
            hosts = stack.enter_context(
                HostSimulator(api, JOB_NAMESPACE, default=host, unflag_on_reboot=True)
            )
            brain = BrainProcess(
                plane,
                plane.workdir / "brain.log",
                namespace=NAMESPACE,
                job_namespace=JOB_NAMESPACE,
                lock_name=LOCK,
                resync_seconds=arguments.resync_seconds,
            )
            measure(bench, Scene(plane, api, brain, hosts, nodes, lock, window, flagged, limit))
    except PhaseError as error:
        result["error"] = str(error)
        say(f"error: {error}")
    except Exception as error:
        result["error"] = f"{type(error).__name__}: {error}"
        say(f"error: {result['error']}")
    finally:
        try:
            if brain is not None:
                brain.stop()
            if plane.audit_log.exists():
                summarise_requests(bench, plane.audit_log)
            bench.figure("window_object_bytes", window.peak_bytes)
            bench.figure("lock_object_bytes", lock.peak_bytes)
            if arguments.keep_logs:
                keep_logs(plane, arguments.keep_logs)
        finally:
            plane.stop()
    bench.figure("bench_s", time.monotonic() - started, 1)
    return result


@dataclass(frozen=True)
class Scene:
    """What the phases run against: the control plane, its client, the brain (not started
    yet), the simulated hosts, and the watches on the nodes, the lock and the window."""

    plane: ControlPlane
    api: client.ApiClient
    brain: BrainProcess
    hosts: HostSimulator
    nodes: Nodes
    lock: LockWatch
    window: WindowWatch
    flagged: list[str]
    limit: int


def measure(bench: Run, scene: Scene) -> None:
    """The phases, against a running control plane with the nodes Ready and no brain yet."""
    arguments = bench.arguments
    result = bench.result
    timeout = arguments.phase_timeout
    brain_started = time.monotonic()
    scene.brain.start()
    assert scene.brain.process is not None
    pid = bench.pid = scene.brain.process.pid
    with Sampler(pid) as sampler:
        with bench.phase("startup"):
            governed = arguments.nodes

            def counted_all() -> bool:
                counts = scene.window.counts()
                return counts.get("governed") == governed and not counts.get("pending")

            first_status = wait_until(
                counted_all, "the first correct window status", timeout, scene.brain
            )
            bench.figure("brain_start_to_first_status_s", first_status - brain_started)
            say(f"first correct status after {result['brain_start_to_first_status_s']} s")
            bench.figure("brain_startup_cpu_s", cpu_seconds(pid), 1)
            time.sleep(arguments.settle_seconds)
        cpu = CpuMeter(pid)
        with bench.phase("idle"):
            cpu.start()
            idle_start = time.monotonic()
            time.sleep(arguments.idle_seconds)
            bench.figure("brain_idle_cpu_pct", cpu.percent(), 1)
            end = time.monotonic()
            events = scene.nodes.events_between(idle_start, end)
            bench.figure("idle_node_events_per_s", events.total() / (end - idle_start))
            bench.figure("idle_node_events_by_writer", dict(events.most_common(5)))
            bench.figure(
                "brain_idle_rss_mib", sampler.mean_between(idle_start, time.monotonic()), 1
            )
        names = sorted(scene.nodes.snapshot())
        per_second = arguments.nodes / 300
        with bench.phase("churn"):
            cpu.start()
            churn_start = time.monotonic()
            with heartbeats(scene.api, names, per_second) as sent:
                time.sleep(arguments.churn_seconds)
            bench.figure("brain_churn_cpu_pct", cpu.percent(), 1)
            end = time.monotonic()
            events = scene.nodes.events_between(churn_start, end)
            bench.figure("churn_node_events_per_s", events.total() / (end - churn_start))
            bench.figure("churn_node_events_by_writer", dict(events.most_common(5)))
            bench.figure("churn_updates_per_s", sent[0] / arguments.churn_seconds)
            if sent[1]:
                bench.figure("churn_updates_late", sent[1])
        with bench.phase("rollout"):
            cpu.start()
            try:
                rollout(bench, scene)
            finally:
                bench.figure("brain_rollout_cpu_pct", cpu.percent(), 1)
        bench.figure("brain_peak_rss_mib", sampler.peak(), 1)
        bench.figure("brain_total_cpu_s", cpu_seconds(pid), 1)


def rollout(bench: Run, scene: Scene) -> None:
    arguments = bench.arguments
    result = bench.result
    timeout = arguments.phase_timeout
    boots = {name: state.boot_id for name, state in scene.nodes.snapshot().items()}
    wanted = set(scene.flagged)
    plan_thread: threading.Thread | None = None
    start = time.monotonic()
    bench.flagged_at = time.time()
    scene.nodes.first_cordon_after = start
    try:
        patch_in_parallel(scene.api, scene.flagged, flag_body, status=False)
        bench.figure("flag_writes_s", time.monotonic() - start)
        say(f"flagged {len(scene.flagged)} nodes")
        first = wait_until(
            lambda: scene.nodes.first_cordon is not None, "the first cordon", timeout, scene.brain
        )
        # As the bench's Node watch saw it: late by up to the flagging itself (the watch thread
        # shares the interpreter with the flagging threads); the audit log's time replaces it.
        bench.figure("flag_to_first_cordon_s", first - start)
        bench.figure("flag_to_first_cordon_seen_s", first - start)
        say(f"first cordon seen after {result['flag_to_first_cordon_s']} s")

        def time_plan() -> None:
            # Its own CPU time too (os.wait4: this child's only): on a loaded machine the wall
            # time is mostly waiting for a core, and the CPU time says what the CLI costs.
            with tempfile.TemporaryFile() as output:
                began = time.monotonic()
                process = subprocess.Popen(
                    [*plan_command(), "plan", "--namespace", NAMESPACE, "--lock-name", LOCK],
                    env=scene.plane.environment(),
                    stdout=subprocess.DEVNULL,
                    stderr=output,
                )
                killer = threading.Timer(600, process.kill)
                killer.start()
                try:
                    _, status, usage = os.wait4(process.pid, 0)
                finally:
                    killer.cancel()
                process.returncode = os.waitstatus_to_exitcode(status)
                bench.figure("plan_cli_s", time.monotonic() - began)
                bench.figure("plan_cli_cpu_s", usage.ru_utime + usage.ru_stime)
                if process.returncode != 0:
                    output.seek(0)
                    error = output.read().decode(errors="replace")[-300:]
                    bench.figure("plan_cli_error", f"exit {process.returncode}: {error}")

        plan_thread = threading.Thread(target=time_plan, name="bench-plan", daemon=True)
        plan_thread.start()
        full = wait_until(
            lambda: scene.lock.latest().in_maintenance >= scene.limit,
            f"{scene.limit} nodes in maintenance",
            timeout,
            scene.brain,
        )
        bench.figure("time_to_limit_s", full - start)

        def finished() -> bool:
            states = scene.nodes.snapshot()
            return not scene.lock.latest().holders and all(
                name in states
                and states[name].boot_id != boots.get(name)
                and not states[name].unschedulable
                and states[name].ready
                for name in wanted
            )

        last = time.monotonic()
        progress = -1

        def finished_with_progress() -> bool:
            nonlocal last, progress
            done = sum(1 for record in scene.hosts.reboots if record.node in wanted)
            if done != progress and time.monotonic() - last > 10:
                held = scene.lock.latest().in_maintenance
                say(f"{done} of {len(wanted)} rebooted, {held} in maintenance")
                last, progress = time.monotonic(), done
            return finished()

        end = wait_until(
            finished_with_progress,
            "every flagged node rebooted and released",
            timeout,
            scene.brain,
            interval=0.1,
        )
        bench.figure("rollout_s", end - start)
        say(f"rollout done after {result['rollout_s']} s")
        with contextlib.suppress(PhaseError):
            wait_until(
                lambda: (
                    scene.window.counts().get("inMaintenance", 0) == 0
                    and scene.window.counts().get("pending", 0) == 0
                ),
                "the window status to settle",
                30,
            )
    finally:
        states = scene.nodes.snapshot()
        rebooted = sum(
            1 for name in wanted if name in states and states[name].boot_id != boots.get(name)
        )
        bench.figure("rebooted", rebooted)
        bench.figure(
            "max_in_maintenance",
            max((v.in_maintenance for v in scene.lock.since(start)), default=0),
        )
        bench.figure(
            "max_lock_holders", max((len(v.holders) for v in scene.lock.since(start)), default=0)
        )
        bench.figure("max_cordoned", scene.nodes.max_cordoned)
        finished = [record.finished for record in scene.hosts.reboots if record.node in wanted]
        if finished:
            bench.figure("last_host_reboot_s", max(finished) - start)
        bench.figure("status_done_count", scene.window.counts().get("done"))
        bench.figure("status_counts_at_end", scene.window.counts())
        bench.figure("lock_phase_seconds", phase_seconds(scene.lock.since(start)))
        times = handoffs(scene.lock.since(start), wanted, scene.limit)
        bench.figure("handoff_p50_s", percentile(times, 0.5))
        bench.figure("handoff_p90_s", percentile(times, 0.9))
        bench.figure("handoffs", len(times))
        if plan_thread is not None:
            plan_thread.join(timeout=60)


def summarise_requests(bench: Run, audit_log: Path) -> None:
    """The brain's requests per phase, from the audit log."""
    requests = read_audit_log(audit_log, BRAIN_USER)
    bench.figure("brain_requests_total", len(requests))
    if "startup" in bench.phases:
        start, end = bench.phases["startup"]
        bench.figure("startup_requests", len(requests_between(requests, start, end)))
    if "idle" in bench.phases:
        start, end = bench.phases["idle"]
        idle = requests_between(requests, start, end)
        bench.figure("idle_requests_per_s", len(idle) / (end - start), 3)
        bench.figure("idle_requests", describe_requests(idle))
    if "churn" in bench.phases:
        start, end = bench.phases["churn"]
        bench.figure(
            "churn_requests_per_s", len(requests_between(requests, start, end)) / (end - start), 3
        )
    if "rollout" in bench.phases:
        start, end = bench.phases["rollout"]
        during = requests_between(requests, start, end)
        evictions = [request for request in during if request.resource.endswith("/eviction")]
        rebooted = bench.result.get("rebooted") or 0
        cordons = [request.at for request in during if request.cordon]
        if cordons and bench.flagged_at:
            # When the API server received the brain's first cordon (microseconds).
            bench.figure("flag_to_first_cordon_s", min(cordons) - bench.flagged_at)
        bench.figure("rollout_requests", len(during))
        bench.figure("rollout_evictions", len(evictions))
        if rebooted:
            bench.figure(
                "requests_per_reboot_excluding_evictions",
                (len(during) - len(evictions)) / rebooted,
            )
        bench.figure("rollout_requests_by_kind", describe_requests(during))
        codes = Counter(request.code for request in during if request.code >= 300)
        bench.figure(
            "rollout_error_codes", {str(code): count for code, count in sorted(codes.items())}
        )


def keep_logs(plane: ControlPlane, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for path in [plane.workdir / "brain.log", plane.audit_log, *plane.log_paths().values()]:
        if path.exists():
            shutil.copy(path, folder / path.name)
    say(f"logs kept in {folder}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--flag", type=int, default=25, help="nodes flagged at once")
    parser.add_argument("--max-unavailable", type=int, default=10, help="the window's limit")
    parser.add_argument("--zones", type=int, default=3)
    parser.add_argument(
        "--zone-max-unavailable", type=int, default=0, help="a limit per zone (0: none)"
    )
    parser.add_argument("--reboot-seconds", type=float, default=2.0, help="a host's down time")
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--churn-seconds", type=float, default=30.0)
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=5.0,
        help="after the first status, before the idle phase",
    )
    parser.add_argument(
        "--phase-timeout",
        type=float,
        default=600.0,
        help="each phase's longest wait (startup, first cordon, rollout)",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=30.0,
        help="the brain's resync period (the chart's default)",
    )
    parser.add_argument(
        "--node-lease-seconds",
        type=int,
        default=0,
        help="kwok's node Lease duration (renewed every quarter of it; default 40, or N/25 "
        "past 1,000 nodes)",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        help="this py-spy profiles the brain in each phase (with --keep-logs: DIR/profiles)",
    )
    parser.add_argument(
        "--keep-logs", type=Path, help="copy the brain's log and the audit log here"
    )
    parser.add_argument("--json", action="store_true", help="the figures as one JSON line, last")
    arguments = parser.parse_args()
    load = os.getloadavg()
    result = run(arguments)
    result["bench_cpu_s"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_utime
        + resource.getrusage(resource.RUSAGE_SELF).ru_stime,
        1,
    )
    result["load_before"] = [round(value, 2) for value in load]
    result["load_after"] = [round(value, 2) for value in os.getloadavg()]
    if arguments.json:
        print(json.dumps(result, separators=(", ", ": ")), flush=True)
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
