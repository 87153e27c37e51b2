"""The chart installed into the local control plane with the commands of docs/install.md:
what it creates, what its service accounts may do (kubectl auth can-i), what its admission
policies deny (real impersonation), the brain running under its own token, and what uninstall
leaves behind (only the CRD)."""

from __future__ import annotations

import copy
import http.client
import json
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from brain.reboot.reboot_job import build_reboot_job
from localcluster.controlplane import ControlPlane
from localcluster.nodes import KWOK_TOLERATION, create_nodes, delete_nodes, wait_for
from localcluster.processes import free_port

REPOSITORY = Path(__file__).resolve().parents[2]
INSTALL_DOC = REPOSITORY / "docs" / "install.md"
IMAGE_REPOSITORY = "localhost/pitstop"
IMAGE_TAG = "chart-test"
IMAGE = f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"
HOST_AGENT_DIRECTORY = "/var/lib/pitstop-test/approvals"
CRD_NAME = "nodesmaintenancewindows.pitstop.dev"
DEFAULT_DETECTOR_TOLERATIONS = yaml.safe_load(
    (REPOSITORY / "charts" / "pitstop" / "values.yaml").read_text()
)["detector"]["tolerations"]


def documented_commands(block: str) -> list[list[str]]:
    """The commands of the ```sh block after `<!-- test: BLOCK -->` in docs/install.md."""
    text = INSTALL_DOC.read_text()
    match = re.search(rf"<!-- test: {block} -->\s*```sh\n(.*?)```", text, re.DOTALL)
    assert match, f"docs/install.md has no block marked test: {block}"
    return [shlex.split(line) for line in match.group(1).splitlines() if line.strip()]


@dataclass
class Release:
    cluster: ControlPlane
    name: str
    namespace: str
    detector_namespace: str
    job_namespace: str

    def rename(self, word: str) -> str:
        """The documented names, made unique for this test."""
        return {
            "pitstop": self.name,
            "pitstop-system": self.namespace,
            "pitstop-node": self.detector_namespace,
        }.get(word, word.replace("=pitstop-node", f"={self.detector_namespace}"))

    def extra_helm_values(self) -> list[str]:
        # The locally built image, a unique Job namespace, the HostAgent method (issue 10's) next
        # to the default DBus, a test approval directory, and the kwok nodes' taint next to the
        # detector's default tolerations (a dedicated pool, as docs/install.md says).
        tolerations = [*DEFAULT_DETECTOR_TOLERATIONS, KWOK_TOLERATION]
        return [
            "--set-json",
            f"detector.tolerations={json.dumps(tolerations)}",
            "--set",
            f"image.repository={IMAGE_REPOSITORY},image.tag={IMAGE_TAG},image.pullPolicy=Never",
            "--set",
            f"reboot.jobNamespace.name={self.job_namespace}",
            "--set",
            "reboot.allowedMethods={DBus,HostAgent}",
            "--set",
            f"reboot.hostAgentDirectory={HOST_AGENT_DIRECTORY}",
        ]

    def run_documented(self, block: str) -> None:
        for command in documented_commands(block):
            program, *arguments = [self.rename(word) for word in command]
            if program == "kubectl":
                self.cluster.kubectl(*arguments)
            elif program == "helm":
                if arguments[0] in ("install", "upgrade"):
                    arguments += self.extra_helm_values()
                self.helm(*arguments)
            else:
                pytest.fail(f"docs/install.md runs {program}, which this test does not know")

    def helm(self, *arguments: str) -> str:
        result = subprocess.run(
            [str(self.cluster.binaries["helm"]), *arguments],
            capture_output=True,
            text=True,
            env=self.cluster.environment(),
            cwd=REPOSITORY,
            timeout=180,
        )
        assert result.returncode == 0, f"helm {' '.join(arguments)}: {result.stderr}"
        return result.stdout

    @property
    def brain(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}-brain"

    @property
    def detector(self) -> str:
        return f"system:serviceaccount:{self.detector_namespace}:{self.name}-detector"

    def can(self, user: str, verb: str, resource: str, namespace: str | None = None) -> bool:
        """kubectl auth can-i; `resource` is type[/name] or type#subresource."""
        resource, _, subresource = resource.partition("#")
        arguments = ["auth", "can-i", verb, resource, "--as", user]
        arguments += ["--subresource", subresource] if subresource else []
        arguments += ["-n", namespace] if namespace else ["--all-namespaces"]
        result = self.cluster.kubectl(*arguments, check=False)
        assert result.stdout.strip() in ("yes", "no"), result.stderr
        return result.stdout.strip() == "yes"


def instance_objects(cluster: ControlPlane, release: str) -> list[str]:
    """Every object labelled with this release's instance, cluster-wide."""
    kinds = (
        "namespaces,clusterroles,clusterrolebindings,validatingadmissionpolicies,"
        "validatingadmissionpolicybindings,roles,rolebindings,serviceaccounts,deployments,"
        "daemonsets,services,configmaps,nodesmaintenancewindows"
    )
    result = cluster.kubectl(
        "get", kinds, "-A", "-l", f"app.kubernetes.io/instance={release}", "-o", "name"
    )
    return result.stdout.split()


@pytest.fixture
def release(cluster: ControlPlane, api_client: client.ApiClient) -> Iterator[Release]:
    """The chart installed by docs/install.md's commands (uninstalled by the test itself)."""
    suffix = uuid.uuid4().hex[:6]
    installed = Release(
        cluster,
        name=f"pitstop-{suffix}",
        namespace=f"pitstop-system-{suffix}",
        detector_namespace=f"pitstop-node-{suffix}",
        job_namespace=f"pitstop-reboot-{suffix}",
    )
    installed.run_documented("install")
    yield installed
    subprocess.run(
        [str(cluster.binaries["helm"]), "uninstall", installed.name, "-n", installed.namespace],
        capture_output=True,
        env=cluster.environment(),
        check=False,
    )
    cluster.kubectl("delete", "namespace", installed.namespace, "--wait=false", check=False)


def test_install_rbac_policies_and_uninstall(
    release: Release, cluster: ControlPlane, api_client: client.ApiClient
) -> None:
    node = f"chart-{uuid.uuid4().hex[:6]}"
    create_nodes(api_client, [node])
    try:
        check_created(release, api_client, node)
        check_brain_permissions(release)
        check_detector_permissions(release)
        check_job_policy(release, node)
        check_brain_runs_with_its_token(release, api_client)
        check_upgrade(release)
        # Uninstall while the node exists: kwok then finishes the pods of the deleted namespaces.
        check_uninstall(release)
    finally:
        delete_nodes(api_client, [node])


def check_created(release: Release, api_client: client.ApiClient, node: str) -> None:
    objects = set(instance_objects(release.cluster, release.name))
    expected = {
        f"namespace/{release.job_namespace}",
        f"namespace/{release.detector_namespace}",
        f"clusterrole.rbac.authorization.k8s.io/{release.name}-brain",
        f"clusterrole.rbac.authorization.k8s.io/{release.name}-detector",
        f"clusterrolebinding.rbac.authorization.k8s.io/{release.name}-brain",
        f"clusterrolebinding.rbac.authorization.k8s.io/{release.name}-detector",
        f"validatingadmissionpolicy.admissionregistration.k8s.io/{release.name}-reboot-jobs",
        f"validatingadmissionpolicy.admissionregistration.k8s.io/{release.name}-detector-own-node",
        f"role.rbac.authorization.k8s.io/{release.name}-brain",
        f"role.rbac.authorization.k8s.io/{release.name}-brain-jobs",
        f"role.rbac.authorization.k8s.io/{release.name}-brain-events",
        f"serviceaccount/{release.name}-brain",
        f"serviceaccount/{release.name}-detector",
        f"deployment.apps/{release.name}-brain",
        f"daemonset.apps/{release.name}-detector",
        f"service/{release.name}-brain-metrics",
        f"service/{release.name}-detector-metrics",
    }
    assert expected <= objects, f"missing: {sorted(expected - objects)}"
    namespaces = client.CoreV1Api(api_client)
    job_labels = namespaces.read_namespace(release.job_namespace).metadata.labels
    assert job_labels["pod-security.kubernetes.io/enforce"] == "privileged"
    # The pods pass Pod Security: the brain's in its "restricted" namespace, the detector's (one
    # per node) in its own. The controllers would report FailedCreate otherwise.
    core = client.CoreV1Api(api_client)

    def pods(namespace: str, component: str) -> list[Any]:
        selector = f"app.kubernetes.io/instance={release.name},app.kubernetes.io/component="
        return list(core.list_namespaced_pod(namespace, label_selector=selector + component).items)

    brain_pod = wait_for(lambda: pods(release.namespace, "brain"), "the brain pod", timeout=60)[0]
    container = brain_pod.spec.containers[0]
    assert container.image == IMAGE
    assert container.security_context.read_only_root_filesystem is True
    assert container.security_context.capabilities.drop == ["ALL"]
    assert brain_pod.spec.security_context.run_as_non_root is True
    assert container.liveness_probe.http_get.path == "/healthz"
    environment = {item.name: item.value for item in container.env}
    assert environment["PITSTOP_JOB_NAMESPACE"] == release.job_namespace
    assert environment["PITSTOP_JOB_IMAGE"] == IMAGE
    assert environment["PITSTOP_HOST_AGENT_DIRECTORY"] == HOST_AGENT_DIRECTORY
    detector_pods = wait_for(
        lambda: [
            pod
            for pod in pods(release.detector_namespace, "detector")
            if pod.spec.node_name == node
            or (pod.spec.affinity and node in str(pod.spec.affinity.node_affinity))
        ],
        f"a detector pod for {node}",
        timeout=60,
    )
    mounts = detector_pods[0].spec.containers[0].volume_mounts
    sentinel = next(mount for mount in mounts if mount.name == "sentinel")
    assert sentinel.read_only is True


def check_brain_permissions(release: Release) -> None:
    brain, namespace, jobs = release.brain, release.namespace, release.job_namespace
    allowed = [
        ("get", "nodes", None),
        ("list", "nodes", None),
        ("watch", "nodes", None),
        ("patch", "nodes", None),
        ("list", "pods", None),
        ("watch", "pods", None),
        ("delete", "pods", None),
        ("create", "pods#eviction", None),
        ("get", "poddisruptionbudgets.policy", None),
        ("list", "poddisruptionbudgets.policy", None),
        ("watch", "poddisruptionbudgets.policy", None),
        ("get", "nodesmaintenancewindows.pitstop.dev", None),
        ("list", "nodesmaintenancewindows.pitstop.dev", None),
        ("watch", "nodesmaintenancewindows.pitstop.dev", None),
        ("patch", "nodesmaintenancewindows.pitstop.dev", None),
        ("patch", "nodesmaintenancewindows.pitstop.dev#status", None),
        ("list", "customresourcedefinitions.apiextensions.k8s.io", None),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io", None),
        ("create", "configmaps", namespace),
        ("get", "configmaps/pitstop-lock", namespace),
        ("update", "configmaps/pitstop-lock", namespace),
        ("get", "secrets", namespace),
        ("create", "jobs.batch", jobs),
        ("get", "jobs.batch", jobs),
        ("list", "jobs.batch", jobs),  # a deleted lock is rebuilt from the reboot Jobs
        ("delete", "jobs.batch", jobs),  # a reboot a person gave up on (release, retry)
        ("create", "leases.coordination.k8s.io", namespace),
        ("get", "leases.coordination.k8s.io/pitstop-status-writer", namespace),
        ("update", "leases.coordination.k8s.io/pitstop-status-writer", namespace),
        ("create", "events", "default"),
    ]
    denied = [
        ("create", "nodes", None),
        ("delete", "nodes", None),
        ("update", "nodes", None),
        ("patch", "nodes#status", None),
        ("create", "pods", None),
        ("create", "pods#exec", None),
        ("get", "pods#log", None),
        ("delete", "poddisruptionbudgets.policy", None),
        ("create", "nodesmaintenancewindows.pitstop.dev", None),
        ("delete", "nodesmaintenancewindows.pitstop.dev", None),
        ("update", "customresourcedefinitions.apiextensions.k8s.io", None),
        ("get", "configmaps/something-else", namespace),
        ("update", "configmaps/something-else", namespace),
        ("delete", "configmaps/pitstop-lock", namespace),
        ("list", "configmaps", namespace),
        ("list", "secrets", namespace),
        ("get", "secrets", "default"),
        ("get", "secrets", jobs),
        ("create", "jobs.batch", namespace),
        ("create", "jobs.batch", "default"),
        ("delete", "jobs.batch", namespace),
        ("update", "jobs.batch", jobs),
        ("get", "leases.coordination.k8s.io/something-else", namespace),
        ("update", "leases.coordination.k8s.io/something-else", namespace),
        ("create", "leases.coordination.k8s.io", "default"),
        ("create", "pods", jobs),
        ("create", "events", namespace),
        ("create", "serviceaccounts#token", namespace),
        ("create", "rolebindings.rbac.authorization.k8s.io", jobs),
        ("*", "*", None),
    ]
    wrong = [
        f"{verb} {resource} in {where or 'all namespaces'}: expected {expected}"
        for expected, table in (("yes", allowed), ("no", denied))
        for verb, resource, where in table
        if release.can(brain, verb, resource, where) != (expected == "yes")
    ]
    assert not wrong, "brain permissions:\n" + "\n".join(wrong)


def check_detector_permissions(release: Release) -> None:
    detector = release.detector
    wrong = [
        f"{verb} {resource}: expected {expected}"
        for expected, table in (
            ("yes", [("get", "nodes"), ("watch", "nodes"), ("patch", "nodes")]),
            (
                "no",
                [
                    ("list", "nodes"),
                    ("update", "nodes"),
                    ("delete", "nodes"),
                    ("patch", "nodes#status"),
                    ("list", "pods"),
                    ("create", "pods#eviction"),
                    ("get", "secrets"),
                    ("get", "configmaps"),
                    ("create", "jobs.batch"),
                    ("list", "nodesmaintenancewindows.pitstop.dev"),
                    ("create", "events"),
                ],
            ),
        )
        for verb, resource in table
        if release.can(detector, verb, resource) != (expected == "yes")
    ]
    assert not wrong, "detector permissions:\n" + "\n".join(wrong)


def check_job_policy(release: Release, node: str) -> None:
    """Jobs as the brain: its own shapes for the allowed methods pass, anything else is denied."""

    def job(method: str, **changes: Any) -> dict[str, Any]:
        built = build_reboot_job(
            node=node,
            boot_id=uuid.uuid4().hex,
            method=method,
            namespace=release.job_namespace,
            image=IMAGE,
            window="chart-test",
            host_agent_directory=HOST_AGENT_DIRECTORY,
        )
        return copy.deepcopy(built)

    def create(body: dict[str, Any], dry_run: bool = True) -> subprocess.CompletedProcess[str]:
        arguments = ["create", "-f", "-", "--as", release.brain, "-n", release.job_namespace]
        if dry_run:
            arguments.append("--dry-run=server")
        return release.cluster.kubectl(*arguments, input=json.dumps(body), check=False)

    def pod(body: dict[str, Any]) -> dict[str, Any]:
        spec: dict[str, Any] = body["spec"]["template"]["spec"]
        return spec

    def other_image(body: dict[str, Any]) -> None:
        pod(body)["containers"][0]["image"] = "docker.io/library/busybox:1.36"

    def privileged(body: dict[str, Any]) -> None:
        pod(body)["containers"][0]["securityContext"]["privileged"] = True
        pod(body)["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True

    def extra_host_path(body: dict[str, Any]) -> None:
        pod(body)["volumes"].append({"name": "root", "hostPath": {"path": "/"}})
        pod(body)["containers"][0]["volumeMounts"].append({"name": "root", "mountPath": "/host"})

    def token(body: dict[str, Any]) -> None:
        pod(body)["automountServiceAccountToken"] = True

    def other_directory(body: dict[str, Any]) -> None:
        pod(body)["volumes"][0]["hostPath"]["path"] = "/etc"

    def added_capability(body: dict[str, Any]) -> None:
        pod(body)["containers"][0]["securityContext"]["capabilities"]["add"] = ["SYS_ADMIN"]

    def host_network(body: dict[str, Any]) -> None:
        pod(body)["hostNetwork"] = True

    def other_command(body: dict[str, Any]) -> None:
        pod(body)["containers"][0]["command"] = ["/bin/sh", "-c", "reboot"]

    def secret_environment(body: dict[str, Any]) -> None:
        pod(body)["containers"][0]["env"].append(
            {"name": "STOLEN", "valueFrom": {"secretKeyRef": {"name": "x", "key": "y"}}}
        )

    def unpinned(body: dict[str, Any]) -> None:
        del pod(body)["nodeName"]

    def second_container(body: dict[str, Any]) -> None:
        extra = copy.deepcopy(pod(body)["containers"][0])
        extra["name"] = "second"
        pod(body)["containers"].append(extra)

    # The policy takes a moment to be loaded by the API server: wait until it denies.
    denied_probe = job("HostAgent")
    other_image(denied_probe)
    wait_for(lambda: create(denied_probe).returncode != 0, "the Job policy to deny", timeout=30)

    for method in ("HostAgent", "DBus"):
        result = create(job(method), dry_run=False)
        assert result.returncode == 0, f"the brain's own {method} Job was denied: {result.stderr}"

    mutations: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
        ("another image", other_image),
        ("privileged", privileged),
        ("an extra hostPath", extra_host_path),
        ("a service-account token", token),
        ("another approval directory", other_directory),
        ("an added capability", added_capability),
        ("host network", host_network),
        ("another command", other_command),
        ("a Secret in the environment", secret_environment),
        ("no node", unpinned),
        ("a second container", second_container),
    ]
    for what, mutate in mutations:
        body = job("HostAgent")
        mutate(body)
        result = create(body)
        assert result.returncode != 0, f"a HostAgent Job with {what} was allowed"
        assert "denied request" in result.stderr or "forbidden" in result.stderr.lower(), (
            result.stderr
        )
    # Methods not in reboot.allowedMethods are denied in their own exact shape.
    for method in ("Signal", "Command"):
        result = create(job(method))
        assert result.returncode != 0, f"the {method} shape was allowed"
        assert "allowed reboot method (DBus, HostAgent)" in result.stderr, result.stderr
    # The admin (not the brain) is not confined by the policy: it only matches the brain.
    admin = release.cluster.kubectl(
        "create", "-f", "-", "-n", release.job_namespace, "--dry-run=server",
        input=json.dumps(job("Signal")), check=False,
    )  # fmt: skip
    assert admin.returncode == 0, admin.stderr


def check_brain_runs_with_its_token(release: Release, api_client: client.ApiClient) -> None:
    """The real brain, with a token of its service account, meets no 403 while it works."""
    token = release.cluster.kubectl(
        "create", "token", f"{release.name}-brain", "-n", release.namespace, "--duration", "10m"
    ).stdout.strip()
    kubeconfig = json.loads(release.cluster.kubeconfig.read_text())
    kubeconfig["users"][0]["user"] = {"token": token}
    path = release.cluster.workdir / f"kubeconfig-brain-{release.name}"
    path.write_text(json.dumps(kubeconfig))
    window = f"chart-{uuid.uuid4().hex[:6]}"
    release.cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "pitstop.dev/v1alpha1",
                "kind": "NodesMaintenanceWindow",
                "metadata": {"name": window},
                "spec": {"nodeSelector": {"matchLabels": {"no-such-pool": "x"}}},
            }
        ),
    )
    port = free_port()
    environment = {
        **os.environ,
        "KUBECONFIG": str(path),
        "PITSTOP_NAMESPACE": release.namespace,
        "PITSTOP_JOB_NAMESPACE": release.job_namespace,
        # As the chart's Deployment sets them: the Job policy allows only this image and directory.
        "PITSTOP_JOB_IMAGE": IMAGE,
        "PITSTOP_HOST_AGENT_DIRECTORY": HOST_AGENT_DIRECTORY,
        "PITSTOP_METRICS_PORT": str(port),
        "PITSTOP_RESYNC_SECONDS": "1",
    }
    log = release.cluster.workdir / f"brain-{release.name}.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", "from brain.main import main; raise SystemExit(main([]))"],
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=REPOSITORY,
        )
    try:

        def window_has_status() -> bool:
            result = release.cluster.kubectl("get", "nmw", window, "-o", "json")
            return bool(json.loads(result.stdout).get("status"))

        wait_for(window_has_status, "the brain to write the window's status", timeout=60)
        time.sleep(3)  # a few more resync passes (lock, events, index)
        # Its dry run of the window's reboot Job passed the chart's Job policy.
        status = json.loads(release.cluster.kubectl("get", "nmw", window, "-o", "json").stdout)
        ready = [c for c in status["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", ready
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/healthz")
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        release.cluster.kubectl("delete", "nmw", window, "--wait=false", check=False)
    text = log.read_text()
    # kopf says "Not enough permissions" when it may not list or watch what it needs.
    denial = re.compile(r"(?<![0-9])403(?![0-9])|[Ff]orbidden|Not enough permissions")
    # Match after the timestamp: its milliseconds can read "403" too.
    forbidden = [line for line in text.splitlines() if denial.search(line.split(" ", 2)[-1])]
    assert not forbidden, "the brain met permission errors:\n" + "\n".join(forbidden[:20])


def check_upgrade(release: Release) -> None:
    release.run_documented("upgrade")
    revision = json.loads(
        release.helm("status", release.name, "-n", release.namespace, "-o", "json")
    )
    assert revision["version"] == 2 and revision["info"]["status"] == "deployed"


def check_uninstall(release: Release) -> None:
    release.run_documented("uninstall")

    def nothing_left() -> bool:
        return not instance_objects(release.cluster, release.name)

    wait_for(nothing_left, "every object of the release to be gone", timeout=120, interval=1)
    for namespace in (release.job_namespace, release.detector_namespace):
        gone = release.cluster.kubectl("get", "namespace", namespace, check=False)
        assert gone.returncode != 0 or "Terminating" in gone.stdout
    # Helm never deletes CRDs: windows survive an uninstall.
    release.cluster.kubectl("get", "crd", CRD_NAME)
