"""A real Kubernetes control plane as local processes: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok (simulated nodes and pods).

Ports are chosen free at start, so two control planes can run side by side. Every component
logs to its own file under the work folder; a failure to start names the component, its
command and the last lines of its log.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from localcluster import binaries
from localcluster.certs import Certificates, issue_client_certificate, make_certificates
from localcluster.processes import Component, free_port

# Nodes carrying this annotation are managed (made Ready, heart-beaten) by kwok.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_VALUE = "fake"
# While a node carries this annotation kwok keeps its hands off (a simulated reboot is under way).
SIMULATED_DOWN_ANNOTATION = "localcluster.pitstop.dev/simulated-down"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/12"
ADMIN_USER = "pitstop-admin"
# The group of the programs' own users: bound to cluster-admin, but not system:masters (whose
# requests are exempt from API Priority and Fairness, and so not counted per flow schema).
PROGRAMS_GROUP = "pitstop:programs"


# kwok's stage that rewrites every node's status conditions 600-610 s after the last one (the
# node's Lease, renewed apart from the stages, is what keeps a node alive).
HEARTBEAT_STAGE = "node-heartbeat-with-lease"
# How long after a controller marks a running kwok pod NotReady it is reported Ready again.
POD_READY_AGAIN_MILLISECONDS = 1000


def _kwok_stages(target: Path, node_heartbeats: bool = True) -> Path:
    """kwok's standard stages, with node stages that leave a simulated-down node alone, and
    one more pod stage that plays the kubelet re-reporting a running pod Ready.

    Why the extra stage: when the node lifecycle controller sees a node NotReady (a simulated
    reboot), it marks that node's pods NotReady, and also any pod bound to the node in the
    next few seconds (its view of the node is refreshed every 5 s). A real kubelet reports
    the pod Ready again; kwok's own stages only ready Pending pods, so such a pod stayed
    NotReady for good and its PodDisruptionBudget refused every eviction from then on.
    """
    documents: list[dict[str, Any]] = []
    hands_off = {
        "key": f'.metadata.annotations["{SIMULATED_DOWN_ANNOTATION}"]',
        "operator": "DoesNotExist",
    }
    for path in binaries.kwok_stage_files():
        for document in yaml.safe_load_all(path.read_text()):
            if not document:
                continue
            if not node_heartbeats and document["metadata"]["name"] == HEARTBEAT_STAGE:
                continue
            if document["spec"]["resourceRef"]["kind"] == "Node":
                document["spec"]["selector"]["matchExpressions"].append(hands_off)
            documents.append(document)
    documents.append(_pod_ready_again_stage(documents))
    target.write_text(yaml.safe_dump_all(documents))
    return target


def _pod_ready_again_stage(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """kwok's pod-ready stage for Running pods that lost their Ready condition: only the
    conditions change (its addresses are the pod's already: patching them again would add a
    second IP, which the API server refuses)."""
    ready = next((d for d in documents if d["metadata"]["name"] == "pod-ready"), None)
    if ready is None:
        raise RuntimeError("kwok's stage files have no pod-ready stage to build on")
    stage = copy.deepcopy(ready)
    stage["metadata"]["name"] = "pitstop-pod-ready-again"
    expressions = stage["spec"]["selector"]["matchExpressions"]
    phase = next(e for e in expressions if e["key"] == ".status.phase")
    phase["values"] = ["Running"]
    stage["spec"]["delay"] = {"durationMilliseconds": POD_READY_AGAIN_MILLISECONDS}
    stage["spec"]["next"] = {
        "statusTemplate": "\n".join(
            [
                "{{ $now := Now }}",
                "conditions:",
                "- lastTransitionTime: {{ $now | Quote }}",
                '  status: "True"',
                "  type: Ready",
                "- lastTransitionTime: {{ $now | Quote }}",
                '  status: "True"',
                "  type: ContainersReady",
            ]
        )
    }
    return stage


def _audit_policy(users: Sequence[str]) -> dict[str, Any]:
    """Metadata (who, what, when, status code) for `users`' requests, nothing else; the body
    too of their Node patches (a cordon can then be told from other patches, to the microsecond).

    The ResponseStarted stage (a watch's start) is left out: every request is then one
    RequestReceived line when it arrives and one ResponseComplete line when it ends.
    """
    node_patches = {
        "level": "Request",
        "users": list(users),
        "verbs": ["patch"],
        "resources": [{"group": "", "resources": ["nodes"]}],
    }
    return {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["ResponseStarted"],
        "rules": [node_patches, {"level": "Metadata", "users": list(users)}, {"level": "None"}],
    }


class KubectlError(subprocess.CalledProcessError):
    """A kubectl command failed; unlike its base class, the message says what kubectl said."""

    def __str__(self) -> str:
        said = (self.stderr or self.stdout or "").strip()
        return f"{super().__str__()}\n{said[-2000:]}"


class ControlPlane:
    """One local control plane. Use as a context manager, or call start() and stop()."""

    def __init__(
        self,
        workdir: Path | None = None,
        name: str = "pitstop",
        audit_users: Sequence[str] = (),
        node_lease_seconds: int = 40,
        node_monitor_grace_seconds: int | None = None,
        disabled_controllers: Sequence[str] = (),
        controller_manager_qps: int | None = None,
        kwok_node_heartbeats: bool = True,
    ) -> None:
        self.name = name
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"{name}-cluster-"))
        # Opt-in (benchmarks): the API server logs these users' requests, one JSON line per
        # request (RequestReceived) and per answer (ResponseComplete), nobody else's, so a
        # program's requests can be counted and sorted by verb, resource and status code.
        self.audit_users = tuple(audit_users)
        self.audit_log = self.workdir / "audit.log"
        # kwok renews each node's Lease every quarter of this; thousands of nodes at the default
        # 40 s are hundreds of writes a second, so a large benchmark may lengthen it.
        self.node_lease_seconds = node_lease_seconds
        # How long the node lifecycle controller waits for a node's heartbeat before it marks the
        # node Unknown (the controller manager's default, 50 s, unless set): a longer Lease
        # needs a longer wait.
        self.node_monitor_grace_seconds = node_monitor_grace_seconds
        # Controllers of the controller manager not to run, e.g. "ttl": it annotates every Node
        # again each time the cluster's size crosses one of its thresholds (100, 500, 1,000,
        # 2,000 nodes), at the manager's 20 requests a second: minutes of Node updates after
        # thousands of nodes are created, which a benchmark of quiet times must not count.
        self.disabled_controllers = tuple(disabled_controllers)
        # The controller manager's client pace (20 requests a second unless set): thousands of
        # new nodes each get their not-ready taint removed and their beta labels at that pace.
        self.controller_manager_qps = controller_manager_qps
        # kwok's status heartbeats come 600-610 s after each node's last status write, so nodes
        # created together all beat within the same seconds (5,000 nodes: ~50 a second for a
        # while, then nothing): a benchmark that plays kubelets' heartbeats at an even rate of
        # its own turns them off.
        self.kwok_node_heartbeats = kwok_node_heartbeats
        self.binaries = binaries.resolve()
        self.admin_token = secrets.token_hex(16)
        # Programs under test get their own user (cluster-admin rights, but a name of their
        # own), so the API server's metrics can count their requests apart from everyone's.
        self.user_tokens = {user: secrets.token_hex(16) for user in ("pitstop-brain",)}
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.apiserver_port = free_port()
        self.server = f"https://127.0.0.1:{self.apiserver_port}"
        self.kubeconfig = self.workdir / "kubeconfig"
        self.logs = self.workdir / "logs"
        # kubectl caches discovery per host:port; ports are reused by the next cluster, so each
        # cluster keeps its own cache instead of reading another cluster's resource list.
        self.kubectl_cache = self.workdir / "kubectl-cache"
        self.certificates: Certificates | None = None
        self.kubelet_client: tuple[Path, Path] | None = None
        self.components: dict[str, Component] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        try:
            self.certificates = make_certificates(self.workdir / "pki")
            # The API server's own identity towards kubelets (logs, exec): only a real node
            # (localcluster.realnode) has a kubelet to talk to.
            self.kubelet_client = issue_client_certificate(
                self.certificates,
                self.workdir / "pki",
                "apiserver-kubelet-client",
                "kube-apiserver-kubelet-client",
                ("system:masters",),
            )
            self._write_kubeconfig()
            self._start_etcd()
            self.start_apiserver()
            self.kubectl(
                "create",
                "clusterrolebinding",
                "pitstop-programs-admin",
                "--clusterrole=cluster-admin",
                f"--group={PROGRAMS_GROUP}",
            )
            self._start_controllers()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every component (newest first); remove the work folder if we made it."""
        for component in reversed(list(self.components.values())):
            component.stop()
        if self._own_workdir and not os.environ.get("PITSTOP_KEEP_CLUSTER_DIR"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_paths(self) -> dict[str, Path]:
        return {name: component.log_path for name, component in self.components.items()}

    # -- components ----------------------------------------------------------------------------

    def _component(self, name: str, command: list[str]) -> Component:
        component = Component(name, command, self.logs / f"{name}.log")
        self.components[name] = component
        component.start()
        return component

    def _start_etcd(self) -> None:
        client_url = f"http://127.0.0.1:{self.etcd_port}"
        peer_url = f"http://127.0.0.1:{self.etcd_peer_port}"
        etcd = self._component(
            "etcd",
            [
                str(self.binaries["etcd"]),
                "--name",
                "default",
                "--data-dir",
                str(self.workdir / "etcd"),
                "--listen-client-urls",
                client_url,
                "--advertise-client-urls",
                client_url,
                "--listen-peer-urls",
                peer_url,
                "--initial-advertise-peer-urls",
                peer_url,
                "--initial-cluster",
                f"default={peer_url}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
        )
        etcd.wait_until(
            lambda: urllib.request.urlopen(f"{client_url}/health", timeout=1).status == 200,
            "healthy",
        )

    def start_apiserver(self) -> None:
        """Start (or start again, on the same port) the API server and wait until it is ready."""
        assert self.certificates is not None and self.kubelet_client is not None
        certificates = self.certificates
        tokens = self.workdir / "tokens.csv"
        lines = [f"{self.admin_token},{ADMIN_USER},{ADMIN_USER},system:masters"]
        lines += [
            f"{token},{user},{user},{PROGRAMS_GROUP}" for user, token in self.user_tokens.items()
        ]
        tokens.write_text("\n".join(lines) + "\n")
        audit: list[str] = []
        if self.audit_users:
            policy = self.workdir / "audit-policy.json"
            policy.write_text(json.dumps(_audit_policy(self.audit_users)))
            audit = [
                "--audit-policy-file",
                str(policy),
                "--audit-log-path",
                str(self.audit_log),
                "--audit-log-format",
                "json",
                "--audit-log-mode",
                "blocking",
            ]
        apiserver = self._component(
            "kube-apiserver",
            [
                str(self.binaries["kube-apiserver"]),
                "--etcd-servers",
                f"http://127.0.0.1:{self.etcd_port}",
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                "--secure-port",
                str(self.apiserver_port),
                "--tls-cert-file",
                str(certificates.serving_cert),
                "--tls-private-key-file",
                str(certificates.serving_key),
                "--client-ca-file",
                str(certificates.ca_cert),
                "--token-auth-file",
                str(tokens),
                "--service-account-key-file",
                str(certificates.service_account_public_key),
                "--service-account-signing-key-file",
                str(certificates.service_account_key),
                "--service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range",
                SERVICE_CLUSTER_IP_RANGE,
                "--authorization-mode",
                "Node,RBAC",
                "--enable-admission-plugins",
                "NodeRestriction",
                "--endpoint-reconciler-type",
                "none",
                "--allow-privileged=true",
                "--kubelet-client-certificate",
                str(self.kubelet_client[0]),
                "--kubelet-client-key",
                str(self.kubelet_client[1]),
                # A real node's name is not in DNS; its InternalIP is the address to use.
                "--kubelet-preferred-address-types",
                "InternalIP,Hostname",
                "--cert-dir",
                str(self.workdir / "apiserver-certs"),
                "--profiling=false",
                *audit,
                "--v",
                "1",
            ],
        )
        apiserver.wait_until(lambda: self._get("/readyz") == 200, "ready", timeout=90)

    def stop_apiserver(self) -> None:
        """Stop only the API server (an outage); start_apiserver() brings it back."""
        component = self.components.pop("kube-apiserver", None)
        if component is not None:
            component.stop()

    def _start_controllers(self) -> None:
        assert self.certificates is not None
        kubeconfig = str(self.kubeconfig)
        tuning = []
        if self.node_monitor_grace_seconds is not None:
            tuning.append(f"--node-monitor-grace-period={self.node_monitor_grace_seconds}s")
        if self.controller_manager_qps is not None:
            tuning.append(f"--kube-api-qps={self.controller_manager_qps}")
            tuning.append(f"--kube-api-burst={2 * self.controller_manager_qps}")
        self._component(
            "kube-controller-manager",
            [
                str(self.binaries["kube-controller-manager"]),
                "--kubeconfig",
                kubeconfig,
                "--authentication-kubeconfig",
                kubeconfig,
                "--authorization-kubeconfig",
                kubeconfig,
                "--leader-elect=false",
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                str(free_port()),
                "--service-account-private-key-file",
                str(self.certificates.service_account_key),
                "--root-ca-file",
                str(self.certificates.ca_cert),
                "--service-cluster-ip-range",
                SERVICE_CLUSTER_IP_RANGE,
                "--controllers",
                ",".join(["*", *(f"-{name}" for name in self.disabled_controllers)]),
                *tuning,
                "--v",
                "1",
            ],
        )
        self._component(
            "kube-scheduler",
            [
                str(self.binaries["kube-scheduler"]),
                "--kubeconfig",
                kubeconfig,
                "--authentication-kubeconfig",
                kubeconfig,
                "--authorization-kubeconfig",
                kubeconfig,
                "--leader-elect=false",
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                str(free_port()),
                "--v",
                "1",
            ],
        )
        stages = _kwok_stages(self.workdir / "kwok-stages.yaml", self.kwok_node_heartbeats)
        kwok = self._component(
            "kwok",
            [
                str(self.binaries["kwok"]),
                "--kubeconfig",
                kubeconfig,
                "--config",
                str(stages),
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector",
                f"{KWOK_NODE_ANNOTATION}={KWOK_NODE_VALUE}",
                "--node-lease-duration-seconds",
                str(self.node_lease_seconds),
                "--cidr",
                "10.240.0.0/16",
                "--node-ip",
                "10.250.0.1",
            ],
        )
        # The service-account token controller and the default namespace show the rest is up.
        for component in self.components.values():
            if not component.running:
                raise component.failure("died at start")
        self.components["kube-controller-manager"].wait_until(
            self._default_service_account_exists, "creating service accounts", timeout=60
        )
        kwok.wait_until(lambda: True, "running")

    def _default_service_account_exists(self) -> bool:
        return self._get("/api/v1/namespaces/default/serviceaccounts/default") == 200

    # -- access --------------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        assert self.certificates is not None
        return ssl.create_default_context(cafile=str(self.certificates.ca_cert))

    def _get(self, path: str) -> int:
        request = urllib.request.Request(
            self.server + path, headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=2, context=self._ssl_context()) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as error:
            return int(error.code)

    def user_kubeconfig(self, user: str) -> Path:
        """A kubeconfig that authenticates as one of `user_tokens`' users."""
        path = self.workdir / f"kubeconfig-{user}"
        if not path.exists():
            self._write_kubeconfig(path, user, self.user_tokens[user])
        return path

    def _write_kubeconfig(
        self, path: Path | None = None, user: str = ADMIN_USER, token: str | None = None
    ) -> None:
        assert self.certificates is not None
        ca_data = base64.b64encode(self.certificates.ca_cert.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": self.name,
                    "cluster": {"server": self.server, "certificate-authority-data": ca_data},
                }
            ],
            "users": [{"name": user, "user": {"token": token or self.admin_token}}],
            "contexts": [{"name": self.name, "context": {"cluster": self.name, "user": user}}],
            "current-context": self.name,
        }
        target = path or self.kubeconfig
        target.write_text(json.dumps(config, indent=2))
        target.chmod(0o600)

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this control plane."""
        result = subprocess.run(
            [
                str(self.binaries["kubectl"]),
                "--kubeconfig",
                str(self.kubeconfig),
                "--cache-dir",
                str(self.kubectl_cache),
                *args,
            ],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, result.args, result.stdout, result.stderr)
        return result

    def wait_for_crd(self, name: str, timeout: float = 60) -> None:
        """Wait until a CRD is Established and its resource is served (`kubectl get` works).

        Right after a CRD is created, discovery can list its group before serving it, and
        kubectl then fails at once ("unable to retrieve the complete list of server APIs")
        instead of waiting: such a failure is asked again until the deadline.
        """
        deadline = time.monotonic() + timeout
        while True:
            result = self.kubectl(
                "wait", "--for=condition=Established", "--timeout=30s", f"crd/{name}", check=False
            )
            if result.returncode == 0:
                result = self.kubectl("get", name, "--all-namespaces", "-o", "name", check=False)
                if result.returncode == 0:
                    return
            if time.monotonic() > deadline:
                raise KubectlError(result.returncode, result.args, result.stdout, result.stderr)
            time.sleep(0.5)

    def environment(self) -> dict[str, str]:
        """Environment for a child process (kubectl, brain, detector) to use this cluster."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["KUBECACHEDIR"] = str(self.kubectl_cache)
        env["PATH"] = os.pathsep.join(
            [
                str(self.binaries["kubectl"].parent),
                str(self.binaries["helm"].parent),
                env.get("PATH", ""),
            ]
        )
        return env
