"""The chart's reboot-Job admission policy, table-driven, against the real API server.

The chart's brain RBAC and Job policy are applied (every reboot method allowed), and Jobs are
created with server-side dry run under a token of the brain's own service account: the Job the
brain builds for each method is accepted, and each single field change of it is denied by the
policy (not by API validation: the denial must name the policy).
"""

from __future__ import annotations

import copy
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from brain.reboot.reboot_job import RebootMethod, build_reboot_job
from localcluster.controlplane import ControlPlane
from localcluster.nodes import create_namespace, delete_namespace, wait_for

pytestmark = pytest.mark.cluster

CHART = Path(__file__).resolve().parents[2] / "charts" / "pitstop"
IMAGE_REPOSITORY = "localhost/pitstop"
IMAGE_TAG = "policy-test"
IMAGE = f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"
HOST_AGENT_DIRECTORY = "/var/lib/pitstop-test/approvals"
SERVICE_ACCOUNT = "pitstop-brain"  # set as brain.serviceAccount.name (default: <release>-brain)

Job = dict[str, Any]


@dataclass
class Installed:
    release: str
    namespace: str  # the release's and the Jobs' namespace
    brain: client.ApiClient  # authenticated with a token of the brain's service account

    @property
    def policy(self) -> str:
        return f"{self.release}-reboot-jobs"

    def job(self, method: RebootMethod) -> Job:
        return copy.deepcopy(
            build_reboot_job(
                node="policy-node",
                boot_id=uuid.uuid4().hex,
                method=method,
                namespace=self.namespace,
                image=IMAGE,
                window="policy-test",
                host_agent_directory=HOST_AGENT_DIRECTORY,
            )
        )

    def denial(self, job: Job) -> str | None:
        """None if the brain may create `job` (server-side dry run), else the API's message."""
        try:
            client.BatchV1Api(self.brain).create_namespaced_job(self.namespace, job, dry_run="All")
        except ApiException as error:
            return str(error.body)
        return None


def brain_client(cluster: ControlPlane, namespace: str) -> client.ApiClient:
    """An API client that is the brain's service account (a real token, no client cert)."""
    token = cluster.kubectl(
        "create", "token", SERVICE_ACCOUNT, "-n", namespace, "--duration", "30m"
    ).stdout.strip()
    loaded = client.Configuration()
    config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=loaded)
    configuration = client.Configuration()
    configuration.host = loaded.host
    configuration.ssl_ca_cert = loaded.ssl_ca_cert
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(configuration)


@pytest.fixture(scope="module")
def installed(cluster: ControlPlane, api_client: client.ApiClient) -> Iterator[Installed]:
    """The chart's brain RBAC and Job policy, every method allowed, under a unique release."""
    namespace = create_namespace(api_client, prefix="job-policy")
    release = f"pitstop-{uuid.uuid4().hex[:6]}"
    arguments = [str(cluster.binaries["helm"]), "template", release, str(CHART), "-n", namespace]
    for value in (
        f"brain.serviceAccount.name={SERVICE_ACCOUNT}",
        f"image.repository={IMAGE_REPOSITORY},image.tag={IMAGE_TAG}",
        f"reboot.jobNamespace.name={namespace}",
        "reboot.allowedMethods={DBus,Signal,Command,HostAgent}",
        f"reboot.hostAgentDirectory={HOST_AGENT_DIRECTORY}",
    ):
        arguments += ["--set", value]
    arguments += ["--show-only", "templates/brain-rbac.yaml"]
    arguments += ["--show-only", "templates/job-admission-policy.yaml"]
    rendered = subprocess.run(arguments, capture_output=True, text=True, check=True).stdout
    cluster.kubectl("apply", "-f", "-", input=rendered)
    brain = brain_client(cluster, namespace)
    setup = Installed(release, namespace, brain)
    # The policy takes a moment to be loaded by the API server: wait until it denies.
    probe = setup.job(RebootMethod.DBUS)
    pod_spec(probe)["hostNetwork"] = True
    wait_for(lambda: setup.denial(probe) is not None, "the Job policy to deny", timeout=30)
    yield setup
    brain.close()
    cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=rendered, check=False)
    delete_namespace(api_client, namespace)


# -- the table ----------------------------------------------------------------------------------


def pod_spec(job: Job) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def container(job: Job) -> dict[str, Any]:
    first: dict[str, Any] = pod_spec(job)["containers"][0]
    return first


def pod_security(job: Job) -> dict[str, Any]:
    context: dict[str, Any] = pod_spec(job).setdefault("securityContext", {})
    return context


def container_security(job: Job) -> dict[str, Any]:
    context: dict[str, Any] = container(job).setdefault("securityContext", {})
    return context


def setter(where: Callable[[Job], dict[str, Any]], key: str, value: Any) -> Callable[[Job], None]:
    def change(job: Job) -> None:
        where(job)[key] = copy.deepcopy(value)

    return change


def job_spec(job: Job) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]
    return spec


def template_metadata(job: Job) -> dict[str, Any]:
    metadata: dict[str, Any] = job["spec"]["template"]["metadata"]
    return metadata


def annotate(key: str, value: str) -> Callable[[Job], None]:
    def change(job: Job) -> None:
        template_metadata(job).setdefault("annotations", {})[key] = value

    return change


def first_mount(job: Job) -> dict[str, Any]:
    mount: dict[str, Any] = container(job)["volumeMounts"][0]
    return mount


def add_volume(volume: dict[str, Any], mount_path: str) -> Callable[[Job], None]:
    def change(job: Job) -> None:
        pod_spec(job).setdefault("volumes", []).append(copy.deepcopy(volume))
        container(job).setdefault("volumeMounts", []).append(
            {"name": volume["name"], "mountPath": mount_path}
        )

    return change


def extra_container(field: str) -> Callable[[Job], None]:
    def change(job: Job) -> None:
        extra = {"name": "extra", "image": IMAGE, "command": ["/bin/sh"]}
        pod_spec(job)[field] = [extra]

    return change


def add_env(entry: dict[str, Any]) -> Callable[[Job], None]:
    def change(job: Job) -> None:
        container(job).setdefault("env", []).append(entry)

    return change


def unmasked_proc(job: Job) -> None:
    # The API server allows Unmasked with hostUsers false only.
    pod_spec(job)["hostUsers"] = False
    container_security(job)["procMount"] = "Unmasked"


def command_tail(*tail: str) -> Callable[[Job], None]:
    """Replace what follows `pitstop-reboot <method>` in the command."""

    def change(job: Job) -> None:
        container(job)["command"] = container(job)["command"][:2] + list(tail)

    return change


ALL = tuple(RebootMethod)
BOOT_CHECKED = (RebootMethod.DBUS, RebootMethod.SIGNAL, RebootMethod.COMMAND)
WITH_VOLUME = (RebootMethod.DBUS, RebootMethod.HOST_AGENT)
UNPRIVILEGED = (RebootMethod.DBUS, RebootMethod.SIGNAL, RebootMethod.HOST_AGENT)

# (what, change, the methods whose Job it is tried on). Each must be denied by the policy.
CHANGES: list[tuple[str, Callable[[Job], None], tuple[RebootMethod, ...]]] = [
    # What an independent test found accepted (issue 24).
    ("pod SELinux type spc_t", setter(pod_security, "seLinuxOptions", {"type": "spc_t"}), ALL),
    (
        "pod AppArmor Unconfined",
        setter(pod_security, "appArmorProfile", {"type": "Unconfined"}),
        ALL,
    ),
    ("supplementalGroups [0, 6]", setter(pod_security, "supplementalGroups", [0, 6]), ALL),
    ("a runtimeClassName", setter(pod_spec, "runtimeClassName", "runc-unconfined"), ALL),
    (
        "priorityClassName system-node-critical",
        setter(pod_spec, "priorityClassName", "system-node-critical"),
        ALL,
    ),
    ("completions 20", setter(job_spec, "completions", 20), ALL),
    ("backoffLimit 20", setter(job_spec, "backoffLimit", 20), ALL),
    ("another service account", setter(pod_spec, "serviceAccountName", "pitstop-brain"), ALL),
    # The pod's security context: every field.
    ("pod seccomp Unconfined", setter(pod_security, "seccompProfile", {"type": "Unconfined"}), ALL),
    ("pod runAsUser", setter(pod_security, "runAsUser", 0), ALL),
    ("pod runAsGroup", setter(pod_security, "runAsGroup", 0), ALL),
    ("pod runAsNonRoot", setter(pod_security, "runAsNonRoot", False), ALL),
    ("pod fsGroup", setter(pod_security, "fsGroup", 0), ALL),
    ("pod fsGroupChangePolicy", setter(pod_security, "fsGroupChangePolicy", "Always"), ALL),
    (
        "pod sysctls",
        setter(pod_security, "sysctls", [{"name": "kernel.shm_rmid_forced", "value": "0"}]),
        ALL,
    ),
    (
        "pod windowsOptions",
        setter(pod_security, "windowsOptions", {"runAsUserName": "ContainerAdministrator"}),
        ALL,
    ),
    # The container's security context.
    (
        "container SELinux type spc_t",
        setter(container_security, "seLinuxOptions", {"type": "spc_t"}),
        ALL,
    ),
    (
        "container AppArmor Unconfined",
        setter(container_security, "appArmorProfile", {"type": "Unconfined"}),
        ALL,
    ),
    (
        "legacy AppArmor annotation",
        annotate("container.apparmor.security.beta.kubernetes.io/reboot", "unconfined"),
        ALL,
    ),
    (
        "legacy seccomp annotation",
        annotate("seccomp.security.alpha.kubernetes.io/pod", "unconfined"),
        ALL,
    ),
    ("another annotation", annotate("example.com/anything", "x"), ALL),
    (
        "container seccomp Unconfined",
        setter(container_security, "seccompProfile", {"type": "Unconfined"}),
        ALL,
    ),
    (
        "container seccomp Localhost",
        setter(
            container_security, "seccompProfile", {"type": "Localhost", "localhostProfile": "x"}
        ),
        ALL,
    ),
    ("container runAsGroup", setter(container_security, "runAsGroup", 0), ALL),
    ("container runAsUser 1000", setter(container_security, "runAsUser", 1000), ALL),
    ("container procMount Unmasked", unmasked_proc, WITH_VOLUME),
    (
        "container windowsOptions",
        setter(container_security, "windowsOptions", {"runAsUserName": "ContainerAdministrator"}),
        ALL,
    ),
    (
        "privileged",
        lambda job: container_security(job).update(privileged=True, allowPrivilegeEscalation=True),
        UNPRIVILEGED,
    ),
    (
        "privilege escalation",
        setter(container_security, "allowPrivilegeEscalation", True),
        UNPRIVILEGED,
    ),
    ("a writable root fs", setter(container_security, "readOnlyRootFilesystem", False), ALL),
    (
        "an added capability",
        setter(container_security, "capabilities", {"drop": ["ALL"], "add": ["SYS_PTRACE"]}),
        UNPRIVILEGED,
    ),
    ("capabilities kept", setter(container_security, "capabilities", {}), UNPRIVILEGED),
    # The Job: one pod, run once.
    ("parallelism 2", setter(job_spec, "parallelism", 2), ALL),
    ("Indexed completion", setter(job_spec, "completionMode", "Indexed"), ALL),
    (
        "backoffLimitPerIndex",
        lambda job: job_spec(job).update(
            completionMode="Indexed", completions=1, backoffLimitPerIndex=5
        ),
        ALL,
    ),
    (
        "a podFailurePolicy",
        setter(
            job_spec,
            "podFailurePolicy",
            {"rules": [{"action": "Ignore", "onExitCodes": {"operator": "In", "values": [1]}}]},
        ),
        ALL,
    ),
    ("suspended", setter(job_spec, "suspend", True), ALL),
    ("managed by another controller", setter(job_spec, "managedBy", "example.com/other"), ALL),
    ("activeDeadlineSeconds", setter(job_spec, "activeDeadlineSeconds", 600), ALL),
    # The pod: host namespaces, scheduling, identity, containers, volumes.
    ("hostNetwork", setter(pod_spec, "hostNetwork", True), ALL),
    ("hostIPC", setter(pod_spec, "hostIPC", True), ALL),
    ("hostPID", setter(pod_spec, "hostPID", True), WITH_VOLUME),
    ("hostUsers false", setter(pod_spec, "hostUsers", False), WITH_VOLUME),
    ("shareProcessNamespace", setter(pod_spec, "shareProcessNamespace", True), WITH_VOLUME),
    ("a service-account token", setter(pod_spec, "automountServiceAccountToken", True), ALL),
    ("a deprecated serviceAccount", setter(pod_spec, "serviceAccount", "pitstop-brain"), ALL),
    ("an init container", extra_container("initContainers"), ALL),
    # (ephemeral containers: the API server itself refuses them in a pod template)
    (
        "a second container",
        lambda job: pod_spec(job)["containers"].append(
            {"name": "second", "image": IMAGE, "command": ["/bin/sh"]}
        ),
        ALL,
    ),
    ("no node", lambda job: pod_spec(job).pop("nodeName"), ALL),
    ("restartPolicy OnFailure", setter(pod_spec, "restartPolicy", "OnFailure"), ALL),
    ("another toleration set", setter(pod_spec, "tolerations", [{"key": "x"}]), ALL),
    ("priority", setter(pod_spec, "priority", 2000001000), ALL),
    ("image pull secrets", setter(pod_spec, "imagePullSecrets", [{"name": "stolen"}]), ALL),
    ("dnsPolicy", setter(pod_spec, "dnsPolicy", "Default"), ALL),
    ("hostAliases", setter(pod_spec, "hostAliases", [{"ip": "10.0.0.1", "hostnames": ["a"]}]), ALL),
    ("another scheduler", setter(pod_spec, "schedulerName", "other"), ALL),
    ("pod resources", setter(pod_spec, "resources", {"limits": {"memory": "64Mi"}}), ALL),
    ("pod os", setter(pod_spec, "os", {"name": "linux"}), ALL),
    ("affinity", setter(pod_spec, "affinity", {"podAffinity": {}}), ALL),
    ("a field the policy does not know", setter(pod_spec, "setHostnameAsFQDN", True), ALL),
    (
        "an extra hostPath",
        add_volume({"name": "root", "hostPath": {"path": "/"}}, "/host"),
        ALL,
    ),
    ("an emptyDir", add_volume({"name": "scratch", "emptyDir": {}}, "/scratch"), ALL),
    (
        "another socket path",
        lambda job: pod_spec(job)["volumes"][0]["hostPath"].update(path="/etc"),
        WITH_VOLUME,
    ),
    ("a subPath", lambda job: first_mount(job).update(subPath="x"), WITH_VOLUME),
    (
        "mount propagation",
        lambda job: first_mount(job).update(mountPropagation="HostToContainer"),
        WITH_VOLUME,
    ),
    # The container.
    ("another image", setter(container, "image", "docker.io/library/busybox:1.36"), ALL),
    ("imagePullPolicy Always", setter(container, "imagePullPolicy", "Always"), ALL),
    ("another command", setter(container, "command", ["/bin/sh", "-c", "reboot"]), ALL),
    ("a boot ID that is a path", command_tail("--boot-id", "../../etc/passwd"), BOOT_CHECKED),
    ("a boot ID with a new line", command_tail("--boot-id", "abc\nrm"), BOOT_CHECKED),
    ("an empty boot ID", command_tail("--boot-id", ""), BOOT_CHECKED),
    ("a word after the boot ID", command_tail("--boot-id", "abc", "--now"), BOOT_CHECKED),
    ("another option", command_tail("--socket", "/run/other.sock"), BOOT_CHECKED),
    ("a lone --boot-id", command_tail("--boot-id"), BOOT_CHECKED),
    (
        "another method's sub-command",
        lambda job: container(job)["command"].__setitem__(1, "approve"),
        BOOT_CHECKED,
    ),
    ("args", setter(container, "args", ["--now"]), ALL),
    ("workingDir", setter(container, "workingDir", "/tmp"), ALL),
    ("a port", setter(container, "ports", [{"containerPort": 80}]), ALL),
    ("stdin", setter(container, "stdin", True), ALL),
    (
        "a lifecycle hook",
        setter(
            container,
            "lifecycle",
            {"postStart": {"exec": {"command": ["/bin/sh", "-c", "reboot"]}}},
        ),
        ALL,
    ),
    (
        "a startup probe",
        setter(container, "startupProbe", {"exec": {"command": ["/bin/sh", "-c", "reboot"]}}),
        ALL,
    ),
    (
        "a termination message path",
        setter(container, "terminationMessagePath", "/etc/shadow"),
        ALL,
    ),
    (
        "an extended resource",
        setter(container, "resources", {"limits": {"example.com/device": "1"}}),
        ALL,
    ),
    (
        "a Secret in the environment",
        add_env({"name": "STOLEN", "valueFrom": {"secretKeyRef": {"name": "x", "key": "y"}}}),
        ALL,
    ),
    ("another variable", add_env({"name": "LD_PRELOAD", "value": "/x.so"}), ALL),
    ("envFrom", setter(container, "envFrom", [{"secretRef": {"name": "x"}}]), ALL),
]


def test_the_table_covers_each_finding_of_issue_24() -> None:
    names = {what for what, _change, _methods in CHANGES}
    found = {
        "pod SELinux type spc_t",
        "pod AppArmor Unconfined",
        "supplementalGroups [0, 6]",
        "a runtimeClassName",
        "priorityClassName system-node-critical",
        "completions 20",
        "backoffLimit 20",
        "another service account",
    }
    assert found <= names
    assert len(names) == len(CHANGES), "each change has its own name"


@pytest.mark.parametrize("method", list(RebootMethod))
def test_the_brains_job_is_accepted_and_each_change_is_denied(
    installed: Installed, method: RebootMethod
) -> None:
    unchanged = installed.denial(installed.job(method))
    assert unchanged is None, f"the brain's own {method} Job was denied: {unchanged}"
    allowed, not_by_the_policy = [], []
    for what, change, methods in CHANGES:
        if method not in methods:
            continue
        job = installed.job(method)
        change(job)
        denial = installed.denial(job)
        if denial is None:
            allowed.append(what)
        elif f"ValidatingAdmissionPolicy '{installed.policy}'" not in denial:
            not_by_the_policy.append(f"{what}: {denial}")
    assert not allowed, f"{method} Jobs allowed with: {', '.join(allowed)}"
    # A change the API server rejects on its own would not test the policy.
    assert not not_by_the_policy, "\n".join(not_by_the_policy)


@pytest.mark.parametrize("method", BOOT_CHECKED)
def test_the_brains_job_names_its_boot_and_the_older_shape_stays_allowed(
    installed: Installed, method: RebootMethod
) -> None:
    # A brain from before the boot check may still create Jobs during an upgrade.
    job = installed.job(method)
    command = container(job)["command"]
    assert command[2] == "--boot-id" and len(command) == 4
    del command[2:]
    assert installed.denial(job) is None


def test_a_window_job_template_is_denied(installed: Installed) -> None:
    template = {
        "spec": {
            "containers": [
                {"name": "reboot", "image": IMAGE, "command": ["pitstop-reboot", "dbus"]}
            ]
        }
    }
    job = build_reboot_job(
        "policy-node", "boot", RebootMethod.DBUS, installed.namespace, IMAGE, "w", template
    )
    denial = installed.denial(job)
    assert denial is not None and installed.policy in denial
