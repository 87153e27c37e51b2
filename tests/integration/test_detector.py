"""The detector as a real process against the real local control plane, and its admission policy
checked with real impersonation."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from detector.report import rfc3339
from localcluster.controlplane import ControlPlane
from localcluster.nodes import create_nodes, delete_nodes
from localcluster.processes import free_port
from pitstop import contract

REPOSITORY = Path(__file__).resolve().parents[2]
CHART = REPOSITORY / "charts" / "pitstop"
LABEL = contract.REBOOT_REQUIRED_LABEL
SINCE = contract.REBOOT_REQUIRED_SINCE_ANNOTATION
REASON = contract.REBOOT_REASON_ANNOTATION
KURED = contract.KURED_REBOOT_NEEDED_ANNOTATION


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> float:
    """Poll `check` every 20 ms; returns the seconds it took, fails the test after `timeout`."""
    started = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - started
        except Exception:  # the API may be down while we wait for it
            pass
        if time.monotonic() - started > timeout:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@dataclass
class Detector:
    process: subprocess.Popen[bytes]
    log: Path
    metrics_port: int

    def get(self, path: str) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=2)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    def metric(self, name: str) -> float:
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"no metric {name}")

    def settled(self) -> bool:
        """The detector has confirmed or written its state in the API."""
        return self.metric("pitstop_detector_last_report_timestamp_seconds") > 0

    def reports(self) -> int:
        return self.log.read_text().count("reported reboot_required=")

    def stop(self) -> float:
        """SIGTERM; returns how long it took to exit."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=5)
        return time.monotonic() - started


DetectorFactory = Callable[..., Detector]


@pytest.fixture
def start_detector(tmp_path: Path) -> Iterator[DetectorFactory]:
    """Starts `python -m detector` processes; every one is ended after the test."""
    started: list[Detector] = []

    def start(node: str, sentinel: Path, kubeconfig: Path | None, **extra: str) -> Detector:
        port = free_port()
        environment = {
            key: value
            for key, value in os.environ.items()
            if key not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
        }
        environment.update(
            NODE_NAME=node,
            PITSTOP_SENTINEL_PATH=str(sentinel),
            PITSTOP_METRICS_PORT=str(port),
            PITSTOP_METRICS_ADDRESS="127.0.0.1",
            PITSTOP_BACKOFF_INITIAL_SECONDS="0.2",
            PITSTOP_BACKOFF_MAX_SECONDS="1",
            PITSTOP_LOG_LEVEL="debug",
        )
        if kubeconfig is not None:
            environment["KUBECONFIG"] = str(kubeconfig)
        environment.update(extra)
        log = tmp_path / f"detector-{len(started)}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "detector"],
                env=environment,
                cwd=REPOSITORY,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        detector = Detector(process, log, port)
        started.append(detector)
        wait_until(lambda: detector.get("/healthz")[0] in (200, 503), 10, "metrics server")
        return detector

    yield start
    for detector in started:
        if detector.process.poll() is None:
            detector.process.kill()
            detector.process.wait(timeout=5)


@pytest.fixture
def node(api_client: client.ApiClient) -> Iterator[str]:
    name = f"detector-{uuid.uuid4().hex[:8]}"
    create_nodes(api_client, [name])
    yield name
    delete_nodes(api_client, [name])


def metadata(core: client.CoreV1Api, name: str) -> tuple[dict[str, str], dict[str, str]]:
    found = core.read_node(name).metadata
    return dict(found.labels or {}), dict(found.annotations or {})


def reported(core: client.CoreV1Api, name: str, reason: str) -> bool:
    labels, annotations = metadata(core, name)
    return (
        labels.get(LABEL) == "true"
        and annotations.get(REASON) == reason
        and bool(annotations.get(SINCE))
    )


def cleared(core: client.CoreV1Api, name: str) -> bool:
    labels, annotations = metadata(core, name)
    return LABEL not in labels and SINCE not in annotations and REASON not in annotations


def test_file_appears_disappears_and_is_replaced_by_rename(
    cluster: ControlPlane,
    core_v1: client.CoreV1Api,
    node: str,
    tmp_sentinel_dir: Path,
    start_detector: DetectorFactory,
) -> None:
    sentinel = tmp_sentinel_dir / "reboot-required"
    detector = start_detector(node, sentinel, cluster.kubeconfig)
    wait_until(detector.settled, 10, "the detector to confirm the node's state")
    assert detector.reports() == 0  # the node already said "no reboot": nothing to send

    sentinel.write_text("kernel 6.8\n")
    took = wait_until(lambda: reported(core_v1, node, "kernel 6.8"), 1.0, "label+annotations")
    print(f"reported after {took:.3f}s")
    since = metadata(core_v1, node)[1][SINCE]
    assert detector.metric("pitstop_detector_reboot_required") == 1

    staging = tmp_sentinel_dir / ".reboot-required.new"
    staging.write_text("kernel 6.9\n")
    staging.replace(sentinel)
    wait_until(lambda: reported(core_v1, node, "kernel 6.9"), 1.0, "the renamed file's reason")
    assert metadata(core_v1, node)[1][SINCE] == since  # still the first sighting

    sentinel.unlink()
    took = wait_until(lambda: cleared(core_v1, node), 1.0, "label and annotations removed")
    print(f"cleared after {took:.3f}s")
    assert detector.metric("pitstop_detector_reboot_required") == 0
    time.sleep(0.5)
    assert detector.reports() == 3  # one PATCH per change, no more
    assert detector.get("/healthz")[0] == 200
    assert detector.stop() < 2.0
    assert detector.process.returncode == 0


def test_restart_reasserts_what_was_removed_while_down(
    cluster: ControlPlane,
    core_v1: client.CoreV1Api,
    node: str,
    tmp_sentinel_dir: Path,
    start_detector: DetectorFactory,
) -> None:
    sentinel = tmp_sentinel_dir / "reboot-required"
    sentinel.write_text("openssl\n")
    first = start_detector(node, sentinel, cluster.kubeconfig)
    wait_until(lambda: reported(core_v1, node, "openssl"), 10, "the first report")
    assert first.stop() < 2.0
    # Still there after the stop: a stopped detector does not mean the reboot happened.
    assert reported(core_v1, node, "openssl")
    cluster.kubectl("label", "node", node, f"{LABEL}-")
    cluster.kubectl("annotate", "node", node, f"{REASON}-")
    second = start_detector(node, sentinel, cluster.kubeconfig)
    wait_until(lambda: reported(core_v1, node, "openssl"), 5, "the state re-asserted")
    # Someone removes the label while it runs: re-asserted from the watch, no polling.
    cluster.kubectl("label", "node", node, f"{LABEL}-")
    wait_until(lambda: reported(core_v1, node, "openssl"), 2, "the label re-asserted")
    assert second.process.poll() is None


def test_node_deleted_and_recreated_is_reasserted(
    cluster: ControlPlane,
    api_client: client.ApiClient,
    core_v1: client.CoreV1Api,
    node: str,
    tmp_sentinel_dir: Path,
    start_detector: DetectorFactory,
) -> None:
    sentinel = tmp_sentinel_dir / "reboot-required"
    sentinel.write_text("")
    detector = start_detector(node, sentinel, cluster.kubeconfig)
    wait_until(
        lambda: (
            reported(core_v1, node, "") is False and metadata(core_v1, node)[0].get(LABEL) == "true"
        ),
        10,
        "the first report",
    )
    old_uid = core_v1.read_node(node).metadata.uid
    delete_nodes(api_client, [node])
    wait_until(
        lambda: not any(n.metadata.name == node for n in core_v1.list_node().items),
        10,
        "the node deleted",
    )
    create_nodes(api_client, [node])
    wait_until(lambda: metadata(core_v1, node)[0].get(LABEL) == "true", 5, "re-asserted")
    assert core_v1.read_node(node).metadata.uid != old_uid
    assert REASON not in metadata(core_v1, node)[1]  # an empty file: no reason annotation
    assert detector.process.poll() is None


def test_kured_compatibility_and_in_cluster_credentials(
    cluster: ControlPlane,
    core_v1: client.CoreV1Api,
    node: str,
    tmp_path: Path,
    tmp_sentinel_dir: Path,
    start_detector: DetectorFactory,
) -> None:
    """In-cluster mode (token file and CA file, as a pod has them) with kured's annotation."""
    config = json.loads(cluster.kubeconfig.read_text())
    service_account = tmp_path / "serviceaccount"
    service_account.mkdir()
    ca = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
    (service_account / "ca.crt").write_bytes(ca)
    (service_account / "token").write_text(config["users"][0]["user"]["token"])
    host, port = cluster.server.removeprefix("https://").rsplit(":", 1)
    sentinel = tmp_sentinel_dir / "reboot-required"
    detector = start_detector(
        node,
        sentinel,
        None,
        KUBERNETES_SERVICE_HOST=host,
        KUBERNETES_SERVICE_PORT=port,
        PITSTOP_SERVICE_ACCOUNT_DIR=str(service_account),
        PITSTOP_KURED_COMPATIBILITY="true",
    )
    wait_until(detector.settled, 10, "the detector to confirm the node's state")
    (tmp_sentinel_dir / "reboot-required.pkgs").write_text("linux-image\nlinux-base\n")
    sentinel.write_text("*** System restart required ***\n")
    wait_until(lambda: reported(core_v1, node, "linux-image, linux-base"), 1.0, "the report")
    annotations = metadata(core_v1, node)[1]
    assert annotations[KURED] == annotations[SINCE]
    sentinel.unlink()
    wait_until(lambda: cleared(core_v1, node), 1.0, "cleared")
    assert KURED in metadata(core_v1, node)[1]  # kured's "most recent" time stays


def test_kubeconfig_with_ca_file(
    cluster: ControlPlane,
    core_v1: client.CoreV1Api,
    node: str,
    tmp_path: Path,
    tmp_sentinel_dir: Path,
    start_detector: DetectorFactory,
) -> None:
    config = json.loads(cluster.kubeconfig.read_text())
    cluster_entry = config["clusters"][0]["cluster"]
    (tmp_path / "ca.crt").write_bytes(
        base64.b64decode(cluster_entry.pop("certificate-authority-data"))
    )
    cluster_entry["certificate-authority"] = "ca.crt"  # relative to the kubeconfig, as kubectl
    kubeconfig = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_text(yaml.safe_dump(config))
    sentinel = tmp_sentinel_dir / "reboot-required"
    sentinel.write_text("via a CA file")
    start_detector(node, sentinel, kubeconfig)
    wait_until(lambda: reported(core_v1, node, "via a CA file"), 10, "the report")


def test_api_outage_then_state_is_correct(
    fresh_cluster: Callable[[], ControlPlane],
    tmp_path: Path,
    tmp_sentinel_dir: Path,
    start_detector: DetectorFactory,
) -> None:
    from tests.conftest import api_client_for

    plane = fresh_cluster()
    api = api_client_for(plane)
    core = client.CoreV1Api(api)
    name = f"outage-{uuid.uuid4().hex[:8]}"
    create_nodes(api, [name])
    sentinel = tmp_sentinel_dir / "reboot-required"
    sentinel.write_text("before the outage")
    detector = start_detector(name, sentinel, plane.kubeconfig)
    wait_until(lambda: reported(core, name, "before the outage"), 10, "the first report")

    plane.stop_apiserver()
    sentinel.unlink()  # changes while the API is away
    wait_until(lambda: detector.metric("pitstop_detector_api_errors_total") >= 2, 10, "errors")
    time.sleep(2)
    assert detector.process.poll() is None, "the detector died during the outage"
    plane.start_apiserver()
    wait_until(lambda: cleared(core, name), 15, "the state corrected after the outage")
    assert detector.process.poll() is None
    wait_until(lambda: detector.get("/healthz")[0] == 200, 5, "healthy again")
    api.close()


@pytest.mark.parametrize(
    "arguments, environment, named",
    [
        (["--poll-interval-seconds", "soon"], {}, "--poll-interval-seconds"),
        ([], {"NODE_NAME": ""}, "NODE_NAME"),
        ([], {"PITSTOP_METRICS_PORT": "-1"}, "PITSTOP_METRICS_PORT"),
        ([], {"KUBECONFIG": "/does/not/exist"}, "KUBECONFIG"),
    ],
)
def test_bad_config_exits_with_a_clear_error(
    tmp_path: Path, arguments: list[str], environment: dict[str, str], named: str
) -> None:
    env = {**os.environ, "NODE_NAME": "node-a", "KUBECONFIG": str(tmp_path / "k"), **environment}
    (tmp_path / "k").write_text("{}")
    result = subprocess.run(
        [sys.executable, "-m", "detector", *arguments],
        env=env,
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert named in result.stderr
    assert (
        "expected" in result.stderr
        or "cannot read" in result.stderr
        or "kubeconfig" in result.stderr
    )


# -- the admission policy ------------------------------------------------------------------------


def helm_template(cluster: ControlPlane, release: str, namespace: str, *values: str) -> str:
    arguments = [str(cluster.binaries["helm"]), "template", release, str(CHART), "-n", namespace]
    for value in values:
        arguments += ["--set", value]
    arguments += ["--show-only", "templates/detector-rbac.yaml"]
    arguments += ["--show-only", "templates/detector-admission-policy.yaml"]
    return subprocess.run(arguments, capture_output=True, text=True, check=True).stdout


@dataclass
class Policy:
    cluster: ControlPlane
    namespace: str
    service_account: str

    def as_detector(self, *args: str, node: str | None) -> subprocess.CompletedProcess[str]:
        identity = ["--as", f"system:serviceaccount:{self.namespace}:{self.service_account}"]
        if node is not None:
            identity += ["--as-user-extra", f"authentication.kubernetes.io/node-name={node}"]
        return self.cluster.kubectl(*identity, *args, check=False)


@pytest.fixture
def policy(cluster: ControlPlane, namespace: str) -> Iterator[Policy]:
    """The chart's detector RBAC and admission policy, applied under a unique release name."""
    release = f"p{uuid.uuid4().hex[:6]}"
    service_account = "pitstop-detector"
    rendered = helm_template(
        cluster, release, namespace, f"detector.serviceAccount.name={service_account}"
    )
    cluster.kubectl("apply", "-f", "-", input=rendered)
    yield Policy(cluster, namespace, service_account)
    cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=rendered, check=False)


def patch(metadata_or_spec: dict[str, Any]) -> str:
    return json.dumps(metadata_or_spec)


def test_admission_policy_confines_the_detector(
    policy: Policy, api_client: client.ApiClient
) -> None:
    own, other = (f"vap-{uuid.uuid4().hex[:6]}", f"vap-{uuid.uuid4().hex[:6]}")
    create_nodes(api_client, [own, other])
    core = client.CoreV1Api(api_client)
    try:
        created = core.read_node(own).metadata.creation_timestamp
        skew = timedelta(seconds=contract.REBOOT_REQUIRED_SINCE_SKEW_SECONDS)
        now = rfc3339(datetime.now(UTC))

        def flag_at(since: str) -> str:
            return patch({"metadata": {"labels": {LABEL: "true"}, "annotations": {SINCE: since}}})

        report = patch(
            {
                "metadata": {
                    "labels": {LABEL: "true"},
                    "annotations": {SINCE: now, REASON: "kernel"},
                }
            }
        )

        def own_patch(body: str, *extra: str) -> subprocess.CompletedProcess[str]:
            return policy.as_detector(
                "patch", "node", own, "--type", "merge", "-p", body, *extra, node=own
            )

        # The policy takes a moment to be seen by the API server: wait until it denies.
        # (each probe sets a new value: an unchanged label would rightly be allowed)
        wait_until(
            lambda: (
                own_patch(patch({"metadata": {"labels": {"probe": uuid.uuid4().hex}}})).returncode
                != 0
            ),
            30,
            "the admission policy to be in force",
        )
        allowed = own_patch(report)
        assert allowed.returncode == 0, allowed.stderr
        # A flag time in the node's life, give or take the clock skew, may be written: the
        # policy cannot tell the future (CEL has no clock), the brain ignores that.
        for since in (rfc3339(created - skew + timedelta(seconds=1)), "2099-01-01T00:00:00Z"):
            within = own_patch(flag_at(since))
            assert within.returncode == 0, (since, within.stderr)
        # A value from before the policy (written here by the admin) does not lock the detector
        # out: unchanged, it passes (the brain ignores it: node_view.believable_since).
        core.patch_node(own, {"metadata": {"annotations": {SINCE: "1970-01-01T00:00:00Z"}}})
        unchanged = own_patch(
            patch({"metadata": {"annotations": {SINCE: "1970-01-01T00:00:00Z", REASON: "other"}}})
        )
        assert unchanged.returncode == 0, unchanged.stderr
        removal = own_patch(
            patch(
                {"metadata": {"labels": {LABEL: None}, "annotations": {SINCE: None, REASON: None}}}
            )
        )
        assert removal.returncode == 0, removal.stderr
        cases = {
            "another node": (
                policy.as_detector(
                    "patch", "node", other, "--type", "merge", "-p", report, node=own
                ),
                "only the Node it runs on",
            ),
            "no node-name extra": (
                policy.as_detector(
                    "patch", "node", own, "--type", "merge", "-p", report, node=None
                ),
                "carries no authentication.kubernetes.io/node-name",
            ),
            "another label": (
                own_patch(patch({"metadata": {"labels": {"team": "x"}}})),
                "only the pitstop.dev/reboot-required label",
            ),
            "another pitstop annotation": (
                own_patch(
                    patch({"metadata": {"annotations": {contract.PHASE_ANNOTATION: "draining"}}})
                ),
                "only the pitstop.dev/reboot-* annotations",
            ),
            "the kured annotation when compatibility is off": (
                own_patch(patch({"metadata": {"annotations": {KURED: "2025-01-01T00:00:00Z"}}})),
                "only the pitstop.dev/reboot-* annotations",
            ),
            "a flag time before the node's creation (1970)": (
                own_patch(flag_at("1970-01-01T00:00:00Z")),
                "no earlier than the Node's creation",
            ),
            "a flag time just out of the skew before the node's creation": (
                own_patch(flag_at(rfc3339(created - skew - timedelta(seconds=1)))),
                "no earlier than the Node's creation",
            ),
            "a flag time that is not an RFC 3339 time": (
                own_patch(flag_at("yesterday")),
                "must be an RFC 3339 time",
            ),
            "a label value other than true": (
                own_patch(patch({"metadata": {"labels": {LABEL: "false"}}})),
                'may only be "true"',
            ),
            "a taint": (
                own_patch(
                    patch(
                        {"spec": {"taints": [{"key": "x", "value": "y", "effect": "NoSchedule"}]}}
                    )
                ),
                "may not change the Node's spec",
            ),
            "spec.unschedulable": (
                own_patch(patch({"spec": {"unschedulable": True}})),
                "may not change the Node's spec",
            ),
            "the status": (
                own_patch(
                    patch({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
                    "--subresource",
                    "status",
                ),
                # RBAC already refuses nodes/status; the policy would refuse it too.
                'resource "nodes/status"',
            ),
            "deleting the node": (
                policy.as_detector("delete", "node", own, node=own),
                "cannot delete resource",
            ),
        }
        for case, (result, reason) in cases.items():
            assert result.returncode != 0, f"{case} was allowed: {result.stdout}"
            assert reason in result.stderr, (case, result.stderr)
        # Nothing of the denied writes reached the nodes.
        own_node = core.read_node(own)
        assert "team" not in (own_node.metadata.labels or {})
        assert not own_node.spec.unschedulable
        assert LABEL not in (core.read_node(other).metadata.labels or {})
        assert SINCE not in (own_node.metadata.annotations or {})
    finally:
        delete_nodes(api_client, [own, other])


def test_chart_keys_match_the_contract(cluster: ControlPlane) -> None:
    """The policy's allowed keys are exactly the detector's keys from pitstop/contract.py."""
    for kured, expected_annotations in (
        ("false", [SINCE, REASON]),
        ("true", [SINCE, REASON, KURED]),
    ):
        rendered = helm_template(cluster, "r", "ns", f"detector.kuredCompatibility={kured}")
        documents = [d for d in yaml.safe_load_all(rendered) if d]
        policy_document = next(d for d in documents if d["kind"] == "ValidatingAdmissionPolicy")
        variables = {v["name"]: v["expression"] for v in policy_document["spec"]["variables"]}
        assert variables["allowedLabels"] == f"['{LABEL}']"
        assert (
            variables["allowedAnnotations"]
            == "[" + ", ".join(f"'{key}'" for key in expected_annotations) + "]"
        )
        role = next(d for d in documents if d["kind"] == "ClusterRole")
        assert role["rules"] == [
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch", "watch"]}
        ]
        account = next(d for d in documents if d["kind"] == "ServiceAccount")
        assert account["metadata"]["namespace"] == "ns"
