"""The chart without a cluster: lint, rendering with default and non-default values, the schema,
the CRD copy and the comment on every value."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from brain.reboot.reboot_job import RebootMethod
from localcluster.binaries import resolve
from pitstop import contract

REPOSITORY = Path(__file__).resolve().parents[2]
CHART = REPOSITORY / "charts" / "pitstop"


@pytest.fixture(scope="module")
def helm() -> Path:
    return resolve(("helm",))["helm"]


def run_helm(helm: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *arguments], capture_output=True, text=True, timeout=120, check=False
    )


def render(helm: Path, *values: str, namespace: str = "pitstop-system") -> list[dict[str, Any]]:
    arguments = ["template", "pitstop", str(CHART), "-n", namespace]
    for value in values:
        arguments += ["--set", value]
    result = run_helm(helm, *arguments)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def find(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for document in documents:
        if document["kind"] == kind and document["metadata"]["name"] == name:
            return document
    raise AssertionError(f"no {kind} {name} in {[d['kind'] for d in documents]}")


def test_lint_strict(helm: Path) -> None:
    for values in ([], ["--set", "sampleWindow.enabled=true,metrics.prometheusRule.enabled=true"]):
        result = run_helm(helm, "lint", "--strict", str(CHART), *values)
        assert result.returncode == 0, result.stdout + result.stderr


def test_defaults(helm: Path) -> None:
    documents = render(helm)
    kinds = {document["kind"] for document in documents}
    assert "NodesMaintenanceWindow" not in kinds  # the sample is off by default
    assert "ServiceMonitor" not in kinds and "PrometheusRule" not in kinds
    brain = find(documents, "Deployment", "pitstop-brain")
    assert brain["spec"]["replicas"] == 1
    assert brain["spec"]["strategy"] == {"type": "Recreate"}
    pod = brain["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    assert container["image"] == "ghcr.io/pitstop-dev/pitstop:0.1.0"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    environment = {item["name"]: item.get("value") for item in container["env"]}
    assert environment["PITSTOP_JOB_IMAGE"] == container["image"]
    assert environment["PITSTOP_JOB_NAMESPACE"] == "pitstop-reboot"
    detector = find(documents, "DaemonSet", "pitstop-detector")
    assert detector["metadata"]["namespace"] == "pitstop-system"
    detector_pod = detector["spec"]["template"]["spec"]
    # Linux nodes only, and not every taint: control-plane, system pools, Pitstop's own taint.
    assert detector_pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert {"operator": "Exists"} not in detector_pod["tolerations"]
    assert {t["key"] for t in detector_pod["tolerations"]} == {
        "node-role.kubernetes.io/control-plane",
        "CriticalAddonsOnly",
        f"{contract.DOMAIN}/reboot-pending",  # the brain's pending taint
    }
    assert not detector_pod.get("hostPID") and not detector_pod.get("hostNetwork")
    assert detector_pod["volumes"] == [
        {"name": "sentinel", "hostPath": {"path": "/var/run", "type": "Directory"}}
    ]
    mounts = detector_pod["containers"][0]["volumeMounts"]
    assert mounts == [{"name": "sentinel", "mountPath": "/kured", "readOnly": True}]
    jobs = find(documents, "Namespace", "pitstop-reboot")
    assert jobs["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    policy = find(documents, "ValidatingAdmissionPolicy", "pitstop-reboot-jobs")
    assert policy["spec"]["validations"][-1]["expression"] == "variables.isDBus"
    for document in documents:
        labels = document["metadata"].get("labels", {})
        if document["kind"] != "CustomResourceDefinition":
            assert labels.get("app.kubernetes.io/instance") == "pitstop", document["kind"]
            assert labels.get("app.kubernetes.io/name") == "pitstop"


def test_non_default_values(helm: Path) -> None:
    documents = render(
        helm,
        "image.repository=registry.example/pitstop,image.tag=1.2.3,image.pullPolicy=Never",
        "detector.namespace=pitstop-node",
        "detector.sentinel.hostDirectory=/run/pitstop-sentinel",
        "detector.priorityClassName=system-node-critical",
        "brain.nodeSelector.role=infra",
        "brain.podAnnotations.team=platform",
        "brain.extraEnv[0].name=EXTRA,brain.extraEnv[0].value=yes",
        "reboot.allowedMethods={HostAgent,Signal}",
        "reboot.hostAgentDirectory=/srv/approvals",
        "reboot.jobNamespace.name=reboots",
        "metrics.serviceMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
        "sampleWindow.enabled=true",
        "detector.extraContainers[0].name=check,detector.extraContainers[0].image=busybox",
    )
    brain = find(documents, "Deployment", "pitstop-brain")
    pod = brain["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"role": "infra"}
    assert brain["spec"]["template"]["metadata"]["annotations"] == {"team": "platform"}
    container = pod["containers"][0]
    assert container["image"] == "registry.example/pitstop:1.2.3"
    assert container["imagePullPolicy"] == "Never"
    environment = {item["name"]: item.get("value") for item in container["env"]}
    assert environment["EXTRA"] == "yes"
    assert environment["PITSTOP_HOST_AGENT_DIRECTORY"] == "/srv/approvals"
    assert environment["PITSTOP_JOB_NAMESPACE"] == "reboots"
    detector = find(documents, "DaemonSet", "pitstop-detector")
    assert detector["metadata"]["namespace"] == "pitstop-node"
    detector_pod = detector["spec"]["template"]["spec"]
    assert detector_pod["priorityClassName"] == "system-node-critical"
    assert detector_pod["volumes"][0]["hostPath"]["path"] == "/run/pitstop-sentinel"
    assert [c["name"] for c in detector_pod["containers"]] == ["detector", "check"]
    node_namespace = find(documents, "Namespace", "pitstop-node")
    assert (
        node_namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    )
    account = find(documents, "ServiceAccount", "pitstop-detector")
    assert account["metadata"]["namespace"] == "pitstop-node"
    detector_policy = find(documents, "ValidatingAdmissionPolicy", "pitstop-detector-own-node")
    assert "system:serviceaccount:pitstop-node:pitstop-detector" in json.dumps(detector_policy)
    job_policy = find(documents, "ValidatingAdmissionPolicy", "pitstop-reboot-jobs")
    assert job_policy["spec"]["validations"][-1]["expression"] == (
        "variables.isHostAgent || variables.isSignal"
    )
    assert "'/srv/approvals'" in json.dumps(job_policy)
    assert "registry.example/pitstop:1.2.3" in json.dumps(job_policy)
    assert find(documents, "Role", "pitstop-brain-jobs")["metadata"]["namespace"] == "reboots"
    rule = find(documents, "PrometheusRule", "pitstop")
    expressions = {r["alert"]: r["expr"] for r in rule["spec"]["groups"][0]["rules"]}
    assert 'pitstop_node_phase{phase="Failed"}' in expressions["PitstopNodeRebootFailed"]
    assert "pitstop_window_blocked" in expressions["PitstopWindowBlocked"]
    assert "up{" in expressions["PitstopBrainDown"]
    assert find(documents, "ServiceMonitor", "pitstop-brain")
    window = find(documents, "NodesMaintenanceWindow", "weeknights")
    assert window["spec"]["reboot"]["method"] == "DBus"


def policy_variables(documents: list[dict[str, Any]], name: str) -> dict[str, str]:
    policy = find(documents, "ValidatingAdmissionPolicy", name)
    return {v["name"]: v["expression"] for v in policy["spec"]["variables"]}


def test_policies_use_the_contracts_names_and_skew(helm: Path) -> None:
    """The policies spell the keys and the clock skew of pitstop/contract.py."""
    documents = render(helm, "detector.kuredCompatibility=true")
    detector = policy_variables(documents, "pitstop-detector-own-node")
    since, kured = (
        contract.REBOOT_REQUIRED_SINCE_ANNOTATION,
        contract.KURED_REBOOT_NEEDED_ANNOTATION,
    )
    assert detector["timeAnnotations"] == f"['{since}', '{kured}']"
    assert f"duration('{contract.REBOOT_REQUIRED_SINCE_SKEW_SECONDS}s')" in detector["earliestTime"]
    jobs = policy_variables(documents, "pitstop-reboot-jobs")
    for key in (contract.JOB_NODE_LABEL, contract.JOB_BOOT_ID_LABEL, contract.MANAGED_BY_LABEL):
        assert f"'{key}'" in jobs["templateLabelKeys"]
    for key in (contract.JOB_BOOT_ID_LABEL, contract.WINDOW_ANNOTATION):
        assert f"'{key}'" in jobs["templateAnnotationKeys"]


def test_custom_sentinel_mounts_no_host_path(helm: Path) -> None:
    documents = render(
        helm,
        "detector.customSentinel.enabled=true,detector.customSentinel.path=/sentinel/reboot",
        "detector.extraVolumes[0].name=sentinel-share,detector.extraVolumes[0].emptyDir.medium=Memory",
        "detector.extraVolumeMounts[0].name=sentinel-share,detector.extraVolumeMounts[0].mountPath=/sentinel",
    )
    pod = find(documents, "DaemonSet", "pitstop-detector")["spec"]["template"]["spec"]
    assert "hostPath" not in json.dumps(pod)
    environment = {item["name"]: item.get("value") for item in pod["containers"][0]["env"]}
    assert environment["PITSTOP_SENTINEL_PATH"] == "/sentinel/reboot"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("brain.logLevel=LOUD", "/brain/logLevel"),
        ("reboot.allowedMethods={Teleport}", "/reboot/allowedMethods/0"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("detector.sentinel.hostDirectory=relative/dir", "/detector/sentinel/hostDirectory"),
        ("brain.metricsPort=70000", "/brain/metricsPort"),
        ("brain.replicas=0", "/brain/replicas"),
        ("reboot.jobNamespace.name=Not_A_Label", "/reboot/jobNamespace/name"),
    ],
)
def test_schema_rejects_wrong_values(helm: Path, value: str, message: str) -> None:
    result = run_helm(helm, "template", "pitstop", str(CHART), "--set", value)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_schema_lists_every_method() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    methods = schema["properties"]["reboot"]["properties"]["allowedMethods"]["items"]["enum"]
    assert methods == [method.value for method in RebootMethod]


def test_chart_crds_equal_top_level_crds() -> None:
    top = sorted(path.name for path in (REPOSITORY / "crds").glob("*.yaml"))
    chart = sorted(path.name for path in (CHART / "crds").glob("*.yaml"))
    assert top == chart
    for name in top:
        chart_copy = (CHART / "crds" / name).read_bytes()
        assert chart_copy == (REPOSITORY / "crds" / name).read_bytes(), (
            f"charts/pitstop/crds/{name} differs from crds/{name}: copy it again"
        )


def uncommented_keys(text: str) -> list[str]:
    """Mapping keys in values.yaml with no comment line directly above them.

    Keys of a plain data block (a list item's fields, the sample window's spec, resources) are
    part of the value that is commented, and are not counted.
    """
    missing: list[str] = []
    lines = text.splitlines()
    data_indent: int | None = None
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if not match:
            continue
        indent = len(match.group(1))
        if data_indent is not None and indent > data_indent:
            continue
        data_indent = None
        previous = lines[number - 1].strip() if number else ""
        if not previous.startswith("#"):
            missing.append(f"line {number + 1}: {match.group(2)}")
        if match.group(2) in (
            "resources",
            "spec",
            "tolerations",
            "livenessProbe",
            "updateStrategy",
            "nodeSelector",
        ):
            data_indent = indent
    return missing


def test_every_value_has_a_comment() -> None:
    assert uncommented_keys((CHART / "values.yaml").read_text()) == []
    # The check itself notices a missing comment.
    assert uncommented_keys("# top\na:\n  # fine\n  b: 1\n  c: 2\n") == ["line 5: c"]


def test_detector_has_its_own_image(helm: Path) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())

    def images(*values: str) -> tuple[str, str, str]:
        documents = render(helm, *values)
        brain = find(documents, "Deployment", "pitstop-brain")["spec"]["template"]["spec"]
        detector = find(documents, "DaemonSet", "pitstop-detector")["spec"]["template"]["spec"]
        container = detector["containers"][0]
        return brain["containers"][0]["image"], container["image"], container["imagePullPolicy"]

    assert images() == (
        f"ghcr.io/pitstop-dev/pitstop:{chart['appVersion']}",
        f"ghcr.io/pitstop-dev/pitstop-detector:{chart['appVersion']}",
        "IfNotPresent",
    )
    assert images(
        "image.repository=registry.example/pitstop,image.tag=1.2.3",
        "detector.image.repository=registry.example/slim,detector.image.tag=4.5.6",
        "detector.image.pullPolicy=Always",
    ) == ("registry.example/pitstop:1.2.3", "registry.example/slim:4.5.6", "Always")
