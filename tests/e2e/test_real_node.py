"""End to end on a REAL node: `helm install` of a release, real pods, a real kubelet.

A real local OCI registry (distribution's) gets a release (both images and the chart, as
`make release` pushes them); one real node (kubelet + containerd, localcluster.realnode) and two
kwok nodes join a private control plane; the chart is installed the way a user does, `helm
install pitstop oci://REGISTRY/charts/pitstop --version X`, and the node's containerd pulls both
images from the registry (nothing is imported); then one rolling reboot of the real
node runs with the HostAgent method, the test playing the host: it runs contrib/host-agent's
script on the approval the reboot Job's pod wrote, and "reboots" the node (new boot ID, the
kubelet and every container restarted). What this proves is summed up in README.md.

Safety: nothing here may reboot or signal this machine. The window's method is HostAgent, the
chart allows no other method (its Job policy denies a DBus Job, checked with the brain's own
token), the host agent's reboot command only touches a file, and a watch over every pod bound
to the real node asserts none was privileged, shared the host's PID namespace, or mounted a
host path outside this test's folders.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, watch

from brain.reboot.reboot_job import build_reboot_job
from localcluster import realnode
from localcluster.controlplane import ControlPlane
from localcluster.nodes import (
    KWOK_TOLERATION,
    create_namespace,
    create_nodes,
    create_pdb,
    wait_for,
)
from localcluster.registry import local_registry
from localcluster.release import Release, release

REPOSITORY = Path(__file__).resolve().parents[2]
HOST_AGENT = REPOSITORY / "contrib" / "host-agent" / "pitstop-host-agent"
RELEASE = "pitstop"
NAMESPACE = "pitstop-system"
DETECTOR_NAMESPACE = "pitstop-node"
JOB_NAMESPACE = "pitstop-reboot"
KWOK_NODES = ["kwok-a", "kwok-b"]
WORKLOAD_LABEL = "e2e.pitstop.dev/workload"
WINDOW_LABEL = "e2e.pitstop.dev/window"
SERVICE_ACCOUNT_FILES = "var/run/secrets/kubernetes.io/serviceaccount"

pytestmark = pytest.mark.cluster


# -- the machine ----------------------------------------------------------------------------------


def _require_real_node() -> None:
    """Skip with the exact reason where no real node can run; in CI (.ci/run) fail instead."""
    realnode.ensure_host_tools()
    reason = realnode.unavailable_reason()
    if reason is None:
        return
    message = f"this machine cannot host a real node: {reason}"
    if os.environ.get("PITSTOP_REQUIRE_REAL_NODE"):
        pytest.fail(message + " (PITSTOP_REQUIRE_REAL_NODE is set: CI must run this test)")
    pytest.skip(message)


@dataclass
class PodsOnNode:
    """Every version of every pod bound to one node, from a watch that runs the whole test."""

    api_client: client.ApiClient
    node: str
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> PodsOnNode:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()

    def _run(self) -> None:
        core = client.CoreV1Api(self.api_client)
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    core.list_pod_for_all_namespaces,
                    field_selector=f"spec.nodeName={self.node}",
                    timeout_seconds=5,
                ):
                    pod = self.api_client.sanitize_for_serialization(event["object"])
                    key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
                    self.seen[key] = pod
                    if self._stop.is_set():
                        break
            except Exception:  # the API server is busy or restarting: watch again
                time.sleep(0.5)

    def unsafe(self, allowed_host_paths: tuple[Path, ...]) -> list[str]:
        """Pods that could have touched the host beyond this test's folders."""
        found = []
        for key, pod in self.seen.items():
            spec = pod.get("spec") or {}
            if spec.get("hostPID") or spec.get("hostNetwork") or spec.get("hostIPC"):
                found.append(f"{key}: shares a host namespace")
            for container in spec.get("containers", []) + spec.get("initContainers", []):
                context = container.get("securityContext") or {}
                if context.get("privileged"):
                    found.append(f"{key}/{container['name']}: privileged")
                if (context.get("capabilities") or {}).get("add"):
                    found.append(f"{key}/{container['name']}: adds capabilities")
            for volume in spec.get("volumes") or []:
                host_path = (volume.get("hostPath") or {}).get("path")
                if host_path and not any(
                    Path(host_path).is_relative_to(allowed) for allowed in allowed_host_paths
                ):
                    found.append(f"{key}: mounts host path {host_path}")
        return found


@dataclass
class Cluster:
    plane: ControlPlane
    api: client.ApiClient
    node: realnode.RealNode
    host_run: Path  # stands in for the host's /var/run (the detector's sentinel directory)
    approvals: Path  # the HostAgent approval directory
    workdir: Path
    release: Release  # what was pushed to the local registry

    def kubectl(self, *arguments: str, **options: Any) -> subprocess.CompletedProcess[str]:
        return self.plane.kubectl(*arguments, **options)

    def helm(self, *arguments: str) -> str:
        result = subprocess.run(
            [str(self.plane.binaries["helm"]), *arguments],
            capture_output=True,
            text=True,
            env=self.plane.environment(),
            cwd=REPOSITORY,
            timeout=300,
        )
        print(f"$ helm {' '.join(arguments)}\n{result.stdout}{result.stderr}")
        assert result.returncode == 0, f"helm {' '.join(arguments)}: {result.stderr}"
        return result.stdout

    def pod(self, namespace: str, component: str) -> dict[str, Any]:
        """The Running pod of a chart component on the real node."""

        def running() -> dict[str, Any] | None:
            listing = json.loads(
                self.kubectl(
                    "get",
                    "pods",
                    "-n",
                    namespace,
                    "-l",
                    f"app.kubernetes.io/component={component}",
                    "--field-selector",
                    f"spec.nodeName={self.node.name}",
                    "-o",
                    "json",
                ).stdout
            )
            for pod in listing["items"]:
                statuses = pod["status"].get("containerStatuses") or []
                if statuses and all(status.get("ready") for status in statuses):
                    return dict(pod)
            return None

        found: dict[str, Any] = wait_for(running, f"a ready {component} pod", timeout=120)
        return found

    def node_object(self) -> dict[str, Any]:
        return self.node.node()

    def window(self, name: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", "nmw", name, "-o", "json").stdout))


@pytest.fixture
def e2e(tmp_path: Path) -> Iterator[Cluster]:
    _require_real_node()
    host_run = tmp_path / "host-run"
    approvals = tmp_path / "approvals"
    for folder in (host_run, approvals):
        folder.mkdir()
        folder.chmod(0o755)
    with local_registry() as registry, ControlPlane(name="pitstop-e2e") as plane:
        pushed = release(registry.address, insecure=True)
        api = client.ApiClient(_configuration(plane))
        node = realnode.RealNode(
            plane,
            registry=registry.address,
            project_image=pushed.images["brain"],
            detector_image=pushed.images["detector"],
        )
        try:
            node.start()
            create_nodes(api, KWOK_NODES)
            yield Cluster(plane, api, node, host_run, approvals, tmp_path, pushed)
        finally:
            node.stop()
            differences = node.host_differences()
            api.close()
    assert differences == [], f"the real node left the machine changed: {differences}"


def _configuration(plane: ControlPlane) -> client.Configuration:
    from kubernetes import config as kubernetes_config

    configuration = client.Configuration()
    kubernetes_config.load_kube_config(str(plane.kubeconfig), client_configuration=configuration)
    return configuration


# -- the test -------------------------------------------------------------------------------------


def test_helm_install_and_one_real_reboot(e2e: Cluster) -> None:
    try:
        rolling_reboot_of_the_real_node(e2e)
    except BaseException:
        print(diagnosis(e2e))
        raise


def diagnosis(e2e: Cluster) -> str:
    """What a failure needs to be understood: the window, the lock, the pods, the brain's log."""
    parts = []
    for title, arguments in (
        ("window", ("get", "nmw", "-o", "yaml")),
        ("lock", ("get", "configmap", "-n", NAMESPACE, "pitstop-lock", "-o", "yaml")),
        ("pods", ("get", "pods", "-A", "-o", "wide")),
        ("jobs", ("get", "jobs", "-A")),
        ("events", ("get", "events", "-A", "--sort-by=.lastTimestamp")),
        ("brain log", ("logs", "-n", NAMESPACE, f"deployment/{RELEASE}-brain", "--tail=80")),
    ):
        result = e2e.kubectl(*arguments, check=False)
        parts.append(f"== {title}\n{result.stdout}{result.stderr}")
    parts.append(f"== component logs: {e2e.node.log_paths()} {e2e.plane.log_paths()}")
    return "\n".join(parts)


def rolling_reboot_of_the_real_node(e2e: Cluster) -> None:
    node = e2e.node.name
    with PodsOnNode(e2e.api, node) as pods_on_node:
        install_chart(e2e)
        check_detector_runs_confined(e2e)
        check_brain_token_cannot_create_a_dbus_job(e2e)
        workload = start_workload(e2e)
        latency = flag_through_the_sentinel(e2e)
        print(f"sentinel -> node label: {latency * 1000:.0f} ms")
        boot_before = e2e.node_object()["status"]["nodeInfo"]["bootID"]
        evictions_before = eviction_requests(e2e)
        e2e.kubectl("label", "node", node, f"{WINDOW_LABEL}=yes")
        window = create_window(e2e)

        approval = play_the_host_agent(e2e, boot_before)
        print(f"approval written by the reboot Job's pod: {approval.name}")
        check_drained_through_evictions(e2e, workload, evictions_before)
        new_boot = simulate_reboot(e2e)

        def rebooted_and_done() -> bool:
            status = e2e.window(window).get("status") or {}
            entries = {entry["name"]: entry for entry in status.get("nodes", [])}
            return entries.get(node, {}).get("phase") == "Done"

        wait_for(rebooted_and_done, f"{node} Done in {window}", timeout=180, interval=0.5)
        after = e2e.node_object()
        assert after["status"]["nodeInfo"]["bootID"] == new_boot != boot_before
        assert not after["spec"].get("unschedulable"), "the node was not uncordoned"
        check_the_job_ran_on_the_real_node(e2e)
        brain = e2e.pod(NAMESPACE, "brain")
        restarts = brain["status"]["containerStatuses"][0]["restartCount"]
        assert restarts >= 1, "the brain's container should have restarted with its node"
        # The detector restarted with the node, found no sentinel and cleared the label.
        wait_for(
            lambda: "pitstop.dev/reboot-required" not in e2e.node_object()["metadata"]["labels"],
            "the reboot-required label cleared after the reboot",
            timeout=60,
        )
    unsafe = pods_on_node.unsafe((e2e.host_run, e2e.approvals))
    assert unsafe == [], f"pods on the real node could have touched the host: {unsafe}"
    assert any(key.startswith(f"{JOB_NAMESPACE}/") for key in pods_on_node.seen)


def install_chart(e2e: Cluster) -> None:
    """From the registry, as a user installs a release: the chart's default images are the
    release's, and the node pulls them (none is on the node before)."""
    assert not node_images(e2e), "the node has Pitstop's images before the install"
    values = {
        "brain": {
            "nodeSelector": {"kubernetes.io/hostname": e2e.node.name},
            "resyncSeconds": 5,
            "logLevel": "DEBUG",
        },
        "detector": {
            "namespace": DETECTOR_NAMESPACE,
            "sentinel": {"hostDirectory": str(e2e.host_run)},
            "pollIntervalSeconds": 60,
        },
        # HostAgent only: the chart's Job policy then denies every other method's Job.
        "reboot": {"allowedMethods": ["HostAgent"], "hostAgentDirectory": str(e2e.approvals)},
    }
    values_file = e2e.workdir / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    e2e.kubectl("create", "namespace", NAMESPACE)
    e2e.kubectl(
        "label",
        "namespace",
        NAMESPACE,
        "pod-security.kubernetes.io/enforce=restricted",
    )
    e2e.helm(
        "install",
        RELEASE,
        e2e.release.chart,
        "--version",
        e2e.release.version,
        "--plain-http",
        "-n",
        NAMESPACE,
        "-f",
        str(values_file),
    )
    for kind, name, namespace in (
        ("deployment", f"{RELEASE}-brain", NAMESPACE),
        ("daemonset", f"{RELEASE}-detector", DETECTOR_NAMESPACE),
    ):
        e2e.kubectl(
            "rollout", "status", f"{kind}/{name}", "-n", namespace, "--timeout=300s", timeout=320
        )
    released = set(e2e.release.images.values())
    assert node_images(e2e) == released
    pulled = json.loads(
        e2e.kubectl("get", "events", "-A", "--field-selector", "reason=Pulled", "-o", "json").stdout
    )
    messages = " ".join(event.get("message", "") for event in pulled["items"])
    print("\n".join(event.get("message", "") for event in pulled["items"]))
    for reference in released:
        assert f'Successfully pulled image "{reference}"' in messages, messages


def node_images(e2e: Cluster) -> set[str]:
    """The release's images in the real node's containerd (pulled, as nothing is imported)."""
    listing = e2e.node.images()
    return {reference for reference in e2e.release.images.values() if reference in listing}


def _container(e2e: Cluster, pod: dict[str, Any]) -> realnode.ContainerProcess:
    name = pod["spec"]["containers"][0]["name"]
    return e2e.node.container_process(pod["metadata"]["namespace"], pod["metadata"]["name"], name)


def check_detector_runs_confined(e2e: Cluster) -> None:
    """The detector's real process: not root, no capabilities, read-only root, no host PIDs."""
    pod = e2e.pod(DETECTOR_NAMESPACE, "detector")
    process = _container(e2e, pod)
    assert process.user_ids[0] != 0 and process.user_ids[1] != 0, process.user_ids
    assert process.effective_capabilities == 0, hex(process.effective_capabilities)
    assert process.no_new_privileges
    assert process.root_read_only
    assert not process.shares_host_pid_namespace
    # The detector's own token (pod-bound: it names the node) may not touch another node.
    token = process.read_file(f"{SERVICE_ACCOUNT_FILES}/token")
    status, body = api_request(
        e2e,
        token,
        "PATCH",
        f"/api/v1/nodes/{KWOK_NODES[0]}",
        {"metadata": {"labels": {"pitstop.dev/reboot-required": "true"}}},
    )
    assert status == 403, (status, body)
    assert f"{RELEASE}-detector-own-node" in body, body
    # ... while its own node it may label (the same token, the same request).
    status, body = api_request(
        e2e,
        token,
        "PATCH",
        f"/api/v1/nodes/{e2e.node.name}",
        {"metadata": {"labels": {"pitstop.dev/reboot-required": None}}},
    )
    assert status == 200, (status, body)


def check_brain_token_cannot_create_a_dbus_job(e2e: Cluster) -> None:
    """With only HostAgent allowed, the Job policy denies the brain a DBus Job (real token)."""
    pod = e2e.pod(NAMESPACE, "brain")
    token = _container(e2e, pod).read_file(f"{SERVICE_ACCOUNT_FILES}/token")
    job = build_reboot_job(
        e2e.node.name, "0" * 8, "DBus", JOB_NAMESPACE, e2e.node.project_image, "probe"
    )
    status, body = api_request(
        e2e, token, "POST", f"/apis/batch/v1/namespaces/{JOB_NAMESPACE}/jobs", job
    )
    assert status == 403, (status, body)
    assert f"{RELEASE}-reboot-jobs" in body and "allowed reboot method (HostAgent)" in body, body


def api_request(
    e2e: Cluster, token: str, method: str, path: str, body: dict[str, Any]
) -> tuple[int, str]:
    """One request to the API server with a pod's own token (not an impersonation)."""
    assert e2e.plane.certificates is not None
    context = ssl.create_default_context(cafile=str(e2e.plane.certificates.ca_cert))
    connection = http.client.HTTPSConnection(
        "127.0.0.1", e2e.plane.apiserver_port, context=context, timeout=10
    )
    content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
    connection.request(
        method,
        path,
        body=json.dumps(body),
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
    )
    response = connection.getresponse()
    text = response.read().decode()
    connection.close()
    return response.status, text


def start_workload(e2e: Cluster) -> str:
    """Two replicas and a PDB on the real node; their replacements may go to the kwok nodes."""
    namespace = create_namespace(e2e.api, "e2e-workload")
    e2e.kubectl("label", "node", e2e.node.name, f"{WORKLOAD_LABEL}=yes")
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "nodeSelector": {WORKLOAD_LABEL: "yes"},
                    "tolerations": [KWOK_TOLERATION],
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {
                            "name": "web",
                            "image": e2e.node.project_image,
                            "imagePullPolicy": "Never",
                            "command": ["python3", "-c", "import time; time.sleep(100000)"],
                        }
                    ],
                },
            },
        },
    }
    e2e.kubectl("apply", "-f", "-", input=json.dumps(deployment))
    create_pdb(e2e.api, namespace, "web", {"app": "web"}, max_unavailable=1)
    wait_for(
        lambda: len(ready_pods(e2e, namespace, e2e.node.name)) == 2,
        "two web pods running on the real node",
        timeout=120,
    )
    for kwok_node in KWOK_NODES:
        e2e.kubectl("label", "node", kwok_node, f"{WORKLOAD_LABEL}=yes")
    return namespace


def ready_pods(e2e: Cluster, namespace: str, node: str) -> list[str]:
    listing = json.loads(
        e2e.kubectl(
            "get",
            "pods",
            "-n",
            namespace,
            "--field-selector",
            f"spec.nodeName={node}",
            "-o",
            "json",
        ).stdout
    )
    return [
        pod["metadata"]["name"]
        for pod in listing["items"]
        if pod["status"].get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")
    ]


def flag_through_the_sentinel(e2e: Cluster) -> float:
    """Create the sentinel on the "host"; return how long the node took to show the label."""
    started = time.monotonic()
    (e2e.host_run / "reboot-required").write_text("*** System restart required ***\n")
    wait_for(
        lambda: (
            e2e.node_object()["metadata"]["labels"].get("pitstop.dev/reboot-required") == "true"
        ),
        "the detector's label",
        timeout=10,
        interval=0.02,
    )
    latency = time.monotonic() - started
    assert latency < 1.0, f"the label took {latency:.2f} s"
    return latency


def eviction_requests(e2e: Cluster) -> float:
    metrics = e2e.kubectl("get", "--raw", "/metrics").stdout
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("apiserver_request_total{") and 'subresource="eviction"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def create_window(e2e: Cluster) -> str:
    name = "e2e-real-node"
    window = {
        "apiVersion": "pitstop.dev/v1alpha1",
        "kind": "NodesMaintenanceWindow",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"matchLabels": {WINDOW_LABEL: "yes"}},
            "maxUnavailable": 1,
            "drain": {"timeout": "2m"},
            "reboot": {"method": "HostAgent", "nodeReturnTimeout": "5m"},
        },
    }
    e2e.kubectl("apply", "-f", "-", input=json.dumps(window))
    return name


def play_the_host_agent(e2e: Cluster, boot_id: str) -> Path:
    """Wait for the approval, then run the real host agent script on it, as systemd would."""
    approval = e2e.approvals / f"reboot-{boot_id}"
    wait_for(approval.exists, f"the approval {approval}", timeout=180, interval=0.2)
    requested = e2e.workdir / "reboot-requested"
    result = subprocess.run(
        ["sh", str(HOST_AGENT)],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PITSTOP_APPROVAL_DIRECTORY": str(e2e.approvals),
            "PITSTOP_BOOT_ID_FILE": str(e2e.node.boot_id_file),
            "PITSTOP_REBOOT_COMMAND": f"touch {requested}",
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert requested.exists(), f"the host agent did not ask for a reboot: {result.stdout}"
    return approval


def check_drained_through_evictions(e2e: Cluster, workload: str, before: float) -> None:
    assert ready_pods(e2e, workload, e2e.node.name) == [], "web pods left on the real node"
    node = e2e.node_object()
    assert node["spec"].get("unschedulable") is True, "the node is not cordoned"
    assert eviction_requests(e2e) - before >= 2, "the web pods did not leave through evictions"


def simulate_reboot(e2e: Cluster) -> str:
    """A reboot as the host sees it: /var/run is emptied, then the node boots again."""
    (e2e.host_run / "reboot-required").unlink()
    for approval in e2e.approvals.glob("reboot-*"):
        approval.unlink()
    return e2e.node.reboot()


def check_the_job_ran_on_the_real_node(e2e: Cluster) -> None:
    listing = json.loads(e2e.kubectl("get", "pods", "-n", JOB_NAMESPACE, "-o", "json").stdout)
    pods = listing["items"]
    assert len(pods) == 1, [pod["metadata"]["name"] for pod in pods]
    assert pods[0]["spec"]["nodeName"] == e2e.node.name
    assert pods[0]["status"]["phase"] == "Succeeded"
    command = pods[0]["spec"]["containers"][0]["command"]
    assert command[:2] == ["pitstop-reboot", "approve"], command


def test_a_killed_runs_leftovers_are_undone_by_the_next_run(tmp_path: Path) -> None:
    """A run killed before its teardown leaves its state file; the next run undoes its changes."""
    _require_real_node()
    with realnode.real_node_lock():
        before = realnode.HostSnapshot.take()
        panic = Path("/proc/sys/kernel/panic")
        original = panic.read_text().strip()
        stale_workdir = tmp_path / "stale-node"
        stale_workdir.mkdir()
        realnode.STATE_PATH.write_text(
            json.dumps(
                {
                    "sysctls": {"kernel/panic": original},
                    "cgroupFolders": sorted(map(str, before.cgroup_folders)),
                    "namespace": "",
                    "workdir": str(stale_workdir),
                }
            )
        )
        # What the killed run had done: its bridge, its nft table, the kubelet's sysctl.
        subprocess.run(["ip", "link", "add", realnode.BRIDGE, "type", "bridge"], check=True)
        subprocess.run(["nft", "add", "table", "ip", realnode.NFT_TABLE], check=True)
        panic.write_text(f"{int(original) + 9}\n")
        try:
            assert len(before.differences(realnode.HostSnapshot.take())) == 3
            realnode.recover_stale_node()
            after = realnode.HostSnapshot.take()
            state_left = realnode.STATE_PATH.exists()
        finally:
            panic.write_text(f"{original}\n")
            subprocess.run(["ip", "link", "delete", realnode.BRIDGE], capture_output=True)
            subprocess.run(
                ["nft", "delete", "table", "ip", realnode.NFT_TABLE], capture_output=True
            )
            realnode.STATE_PATH.unlink(missing_ok=True)
        assert before.differences(after) == []
        assert not state_left and not stale_workdir.exists()
