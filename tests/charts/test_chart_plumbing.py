"""The chart's plumbing without a cluster: as a subchart of an umbrella chart, name overrides,
existing service accounts and RBAC, pod labels, flags and probes, the realistic value sets of
charts/pitstop/ci/, a description on every value and the README generated from them."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from brain.status_writer import LEASE_NAME
from localcluster import chart_readme
from localcluster.binaries import resolve

REPOSITORY = Path(__file__).resolve().parents[2]
CHART = REPOSITORY / "charts" / "pitstop"
VALUE_SETS = sorted((CHART / "ci").glob("*-values.yaml"))


@pytest.fixture(scope="module")
def helm() -> Path:
    return resolve(("helm",))["helm"]


def run_helm(helm: Path, *arguments: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(helm), *arguments], capture_output=True, text=True, timeout=120, cwd=cwd
    )
    assert result.returncode == 0, f"helm {' '.join(arguments)}: {result.stdout}{result.stderr}"
    return result.stdout


def documents_of(rendered: str) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(rendered) if document]


def render(helm: Path, *arguments: str, release: str = "pitstop") -> list[dict[str, Any]]:
    return documents_of(
        run_helm(helm, "template", release, str(CHART), "-n", "pitstop-system", *arguments)
    )


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [document for document in documents if document["kind"] == kind]


def only(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = by_kind(documents, kind)
    return found


def pod_spec(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    spec: dict[str, Any] = only(documents, kind)["spec"]["template"]["spec"]
    return spec


def environment(container: dict[str, Any]) -> dict[str, str | None]:
    return {item["name"]: item.get("value") for item in container["env"]}


def policy_user(policy: dict[str, Any]) -> str:
    """The username a policy's matchCondition selects (request.userInfo.username == '...')."""
    (condition,) = policy["spec"]["matchConditions"]
    expression: str = condition["expression"]
    return expression.split("==")[1].strip().strip("'")


def identities(documents: list[dict[str, Any]], namespace: str) -> dict[str, set[str]]:
    """Every place a service account is named, per component: the pod, the RBAC subjects, the
    admission policy's user. They must all name the same account."""
    found: dict[str, set[str]] = {"brain": set(), "detector": set()}
    for kind, component in (("Deployment", "brain"), ("DaemonSet", "detector")):
        workload = only(documents, kind)
        found[component].add(
            f"system:serviceaccount:{workload['metadata']['namespace']}:"
            f"{workload['spec']['template']['spec']['serviceAccountName']}"
        )
    for document in documents:
        component = document["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        if document["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            for subject in document["subjects"]:
                found[component].add(
                    f"system:serviceaccount:{subject['namespace']}:{subject['name']}"
                )
        if document["kind"] == "ServiceAccount":
            found[component].add(
                f"system:serviceaccount:{document['metadata']['namespace']}:"
                f"{document['metadata']['name']}"
            )
        if document["kind"] == "ValidatingAdmissionPolicy":
            found[component].add(policy_user(document))
    return found


# -- as a subchart -------------------------------------------------------------------------------


@pytest.fixture
def umbrella(tmp_path: Path, helm: Path) -> Iterator[Path]:
    """An umbrella chart that depends on charts/pitstop through file://, dependencies fetched."""
    chart = tmp_path / "platform"
    chart.mkdir()
    (chart / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "platform",
                "version": "1.0.0",
                "dependencies": [
                    {
                        "name": "pitstop",
                        "version": yaml.safe_load((CHART / "Chart.yaml").read_text())["version"],
                        "repository": f"file://{CHART}",
                        "condition": "pitstop.enabled",
                    }
                ],
            }
        )
    )
    (chart / "values.yaml").write_text(
        yaml.safe_dump(
            {
                "global": {"imageRegistry": "registry.example", "storageClass": "fast"},
                "pitstop": {
                    "enabled": True,
                    "fullnameOverride": "platform-reboots",
                    "detector": {"namespace": "platform-node"},
                    "brain": {"podLabels": {"example.com/team": "platform"}},
                },
            }
        )
    )
    run_helm(helm, "dependency", "update", str(chart))
    yield chart
    shutil.rmtree(chart, ignore_errors=True)


def test_renders_as_a_subchart_with_global_values(helm: Path, umbrella: Path) -> None:
    rendered = run_helm(
        helm,
        "template",
        "platform",
        str(umbrella),
        "-n",
        "platform",
        "--set",
        "global.environment=production",
        "--set",
        "pitstop.reboot.allowedMethods={DBus,Signal}",
    )
    documents = documents_of(rendered)
    brain = only(documents, "Deployment")
    assert brain["metadata"]["name"] == "platform-reboots-brain"
    assert brain["metadata"]["namespace"] == "platform"
    assert brain["spec"]["template"]["metadata"]["labels"]["example.com/team"] == "platform"
    assert only(documents, "DaemonSet")["metadata"]["namespace"] == "platform-node"
    job_policy = next(
        d for d in by_kind(documents, "ValidatingAdmissionPolicy") if "reboot-jobs" in json.dumps(d)
    )
    assert job_policy["spec"]["validations"][-1]["expression"] == (
        "variables.isDBus || variables.isSignal"
    )
    found = identities(documents, "platform")
    assert found == {
        "brain": {"system:serviceaccount:platform:platform-reboots-brain"},
        "detector": {"system:serviceaccount:platform-node:platform-reboots-detector"},
    }
    # The condition turns the whole subchart off.
    off = run_helm(
        helm, "template", "platform", str(umbrella), "--set", "pitstop.enabled=false"
    ).strip()
    assert not documents_of(off)
    # helm lint --strict of the umbrella chart checks the subchart's values with its schema.
    run_helm(helm, "lint", "--strict", str(umbrella))


def test_schema_still_rejects_unknown_top_level_values(helm: Path) -> None:
    result = subprocess.run(
        [str(helm), "template", "pitstop", str(CHART), "--set", "globals.x=1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "additional properties 'globals' not allowed" in result.stderr, result.stderr


# -- names and identities -------------------------------------------------------------------------


def test_every_object_is_named_from_the_fullname(helm: Path) -> None:
    for arguments, release, prefix in (
        ([], "pitstop", "pitstop"),
        ([], "reboots", "reboots-pitstop"),
        (["--set", "nameOverride=nodes"], "reboots", "reboots-nodes"),
        (["--set", "fullnameOverride=platform-reboots"], "reboots", "platform-reboots"),
    ):
        documents = render(
            helm,
            *arguments,
            "--set",
            "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true",
            "--set",
            "grafana.dashboard.enabled=true",
            release=release,
        )
        names = {
            (d["kind"], d["metadata"]["name"])
            for d in documents
            if d["kind"] not in ("Namespace", "CustomResourceDefinition")
        }
        assert names, arguments
        assert all(name.startswith(prefix) for _, name in names), (prefix, sorted(names))
        brain = only(documents, "Deployment")
        assert brain["spec"]["template"]["spec"]["serviceAccountName"] == f"{prefix}-brain"
        rule = only(documents, "PrometheusRule")
        down = rule["spec"]["groups"][0]["rules"][-1]["expr"]
        assert f'job="{prefix}-brain-metrics"' in down  # the Service's name is the scrape job
        labels = brain["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == (
            "nodes" if "nameOverride=nodes" in arguments else "pitstop"
        )


def test_long_names_fit_63_characters(helm: Path) -> None:
    documents = render(helm, "--set", f"fullnameOverride={'x' * 45}")
    for document in documents:
        assert len(document["metadata"]["name"]) <= 63, document["metadata"]["name"]


def test_existing_service_accounts_and_no_rbac(helm: Path) -> None:
    documents = render(
        helm,
        "-f",
        str(CHART / "ci" / "subchart-existing-accounts-values.yaml"),
    )
    kinds = {d["kind"] for d in documents}
    assert not kinds & {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    }
    assert identities(documents, "pitstop-system") == {
        "brain": {"system:serviceaccount:pitstop-system:reboots-brain"},
        "detector": {"system:serviceaccount:platform-reboots-node:reboots-detector"},
    }
    brain = only(documents, "Deployment")
    assert environment(brain["spec"]["template"]["spec"]["containers"][0])["PITSTOP_LOCK_NAME"] == (
        "platform-reboots-lock"
    )


def test_the_lock_and_job_namespace_agree_with_the_brains_settings(helm: Path) -> None:
    """The Role lets the brain get/update exactly the ConfigMap it is told is its lock, and the
    Jobs Role, the Job policy and the Namespace are in the namespace it creates Jobs in."""
    for arguments in (
        [],
        ["--set", "fullnameOverride=other,brain.lockName=other-lock,reboot.jobNamespace.name=jobs"],
    ):
        documents = render(helm, *arguments)
        brain = environment(pod_spec(documents, "Deployment")["containers"][0])
        lock_rules = [
            rule
            for role in by_kind(documents, "Role")
            for rule in role["rules"]
            if rule.get("resourceNames") and rule["resources"] == ["configmaps"]
        ]
        assert [rule["resourceNames"] for rule in lock_rules] == [[brain["PITSTOP_LOCK_NAME"]]]
        # The status writer Lease's name is fixed in the brain (brain/status_writer.py).
        lease_rules = [
            rule
            for role in by_kind(documents, "Role")
            for rule in role["rules"]
            if rule.get("resourceNames") and rule["resources"] == ["leases"]
        ]
        assert [rule["resourceNames"] for rule in lease_rules] == [[LEASE_NAME]]
        jobs = brain["PITSTOP_JOB_NAMESPACE"]
        jobs_role = next(
            r for r in by_kind(documents, "Role") if r["metadata"]["name"].endswith("-jobs")
        )
        assert jobs_role["metadata"]["namespace"] == jobs
        assert any(d["metadata"]["name"] == jobs for d in by_kind(documents, "Namespace"))
        policy = next(
            d
            for d in by_kind(documents, "ValidatingAdmissionPolicy")
            if d["metadata"]["name"].endswith("-reboot-jobs")
        )
        selector = policy["spec"]["matchConstraints"]["namespaceSelector"]["matchLabels"]
        assert selector == {"kubernetes.io/metadata.name": jobs}


def test_pod_plumbing(helm: Path) -> None:
    documents = render(
        helm,
        "--set",
        "brain.podLabels.team=platform,brain.podLabels.app\\.kubernetes\\.io/component=hijack",
        "--set",
        "detector.podLabels.team=nodes,detector.podAnnotations.note=hi",
        "--set",
        "brain.extraArgs={--resync-seconds=60},detector.extraArgs={--poll-interval-seconds=30}",
        "--set",
        "brain.priorityClassName=system-cluster-critical",
        "--set",
        "brain.updateStrategy.type=RollingUpdate",
        "--set",
        "detector.livenessProbe.periodSeconds=7,brain.livenessProbe.enabled=false",
        "--set-json",
        'detector.affinity={"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":'
        '{"nodeSelectorTerms":[{"matchExpressions":[{"key":"pool","operator":"NotIn","values":["windows"]}]}]}}}',
    )
    brain = only(documents, "Deployment")
    brain_pod = brain["spec"]["template"]
    # A podLabel may not take the pod away from its Deployment's selector.
    assert brain_pod["metadata"]["labels"]["app.kubernetes.io/component"] == "brain"
    assert brain_pod["metadata"]["labels"]["team"] == "platform"
    assert (
        brain["spec"]["selector"]["matchLabels"].items() <= brain_pod["metadata"]["labels"].items()
    )
    assert brain["spec"]["strategy"] == {"type": "RollingUpdate"}
    assert brain_pod["spec"]["priorityClassName"] == "system-cluster-critical"
    container = brain_pod["spec"]["containers"][0]
    assert container["args"] == ["--resync-seconds=60"]
    assert "livenessProbe" not in container
    detector = only(documents, "DaemonSet")["spec"]["template"]
    assert detector["metadata"]["labels"]["team"] == "nodes"
    assert detector["metadata"]["annotations"] == {"note": "hi"}
    assert detector["spec"]["affinity"]["nodeAffinity"]
    detector_container = detector["spec"]["containers"][0]
    assert detector_container["args"] == ["--poll-interval-seconds=30"]
    assert detector_container["livenessProbe"] == {
        "httpGet": {"path": "/healthz", "port": "metrics"},
        "initialDelaySeconds": 10,
        "periodSeconds": 7,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    }


def test_on_delete_drops_the_default_rolling_update(helm: Path) -> None:
    """Helm merges {type: OnDelete} with the default's rollingUpdate; the chart leaves it out."""
    values = {"detector": {"updateStrategy": {"type": "OnDelete"}}}
    documents = render(helm, "--set-json", f"detector={json.dumps(values['detector'])}")
    assert only(documents, "DaemonSet")["spec"]["updateStrategy"] == {"type": "OnDelete"}
    documents = render(helm, "--set", "brain.updateStrategy.rollingUpdate.maxSurge=0")
    assert only(documents, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}


# -- realistic value sets ------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUE_SETS, ids=lambda path: path.name)
def test_value_sets_lint_strict(helm: Path, values: Path) -> None:
    run_helm(helm, "lint", "--strict", str(CHART), "-f", str(values))


def test_there_are_four_value_sets() -> None:
    assert [path.name for path in VALUE_SETS] == [
        "host-agent-json-dashboard-values.yaml",
        "rhel-rpm-check-values.yaml",
        "scheduling-monitoring-values.yaml",
        "subchart-existing-accounts-values.yaml",
    ]


# -- descriptions and the README -----------------------------------------------------------------


def undescribed(schema: dict[str, Any], prefix: str = "") -> list[str]:
    """Schema properties without a description; a property's own properties are checked too,
    except inside list items (EnvVar names and the like)."""
    missing = []
    for name, entry in schema.get("properties", {}).items():
        key = f"{prefix}{name}"
        if not str(entry.get("description", "")).strip():
            missing.append(key)
        if "properties" in entry and all("description" in c for c in entry["properties"].values()):
            missing += undescribed(entry, f"{key}.")
    return missing


def unknown_to_schema(values: Any, schema: dict[str, Any], prefix: str = "") -> list[str]:
    """values.yaml keys the schema does not describe (down to where the schema stops)."""
    if not isinstance(values, dict) or schema.get("additionalProperties") is not False:
        return []
    missing = []
    for name, value in values.items():
        entry = schema["properties"].get(name)
        if entry is None:
            missing.append(f"{prefix}{name}")
        else:
            missing += unknown_to_schema(value, entry, f"{prefix}{name}.")
    return missing


def test_every_value_has_a_description() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert undescribed(schema) == []
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert unknown_to_schema(values, schema) == []
    # The checks notice a missing description and an unknown key.
    sample = {
        "additionalProperties": False,
        "properties": {
            "a": {
                "description": "x",
                "additionalProperties": False,
                "properties": {"b": {"description": ""}},
            }
        },
    }
    assert undescribed(sample) == ["a.b"]
    assert unknown_to_schema({"a": {"c": 1}}, sample) == ["a.c"]


def test_readme_is_generated_from_the_schema() -> None:
    assert (CHART / "README.md").read_text() == chart_readme.render(), (
        "charts/pitstop/README.md is stale: run python -m localcluster.chart_readme"
    )
    schema = json.loads((CHART / "values.schema.json").read_text())
    table = chart_readme.render().split("## Values", 1)[1]
    assert "| `detector.tolerations` | array |" in table
    assert "| `brain.serviceAccount.create` | boolean | `true` |" in table
    assert schema["properties"]["fullnameOverride"]["description"] in table


def test_readme_check_notices_a_stale_readme(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    schema = json.loads((chart / "values.schema.json").read_text())
    schema["properties"]["rbac"]["properties"]["create"]["description"] = "Changed."
    (chart / "values.schema.json").write_text(json.dumps(schema))
    assert "| `rbac.create` | boolean | `true` | Changed. |" in chart_readme.render(chart)
    assert chart_readme.render(chart) != (CHART / "README.md").read_text()
