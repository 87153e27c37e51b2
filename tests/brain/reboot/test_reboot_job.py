"""The reboot Job's name and shape: pure functions, checked per method and with a user template."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import reboot_helper.main as reboot_helper
from brain.reboot.reboot_job import (
    PLAIN_BOOT_ID_PATTERN,
    JobPhase,
    RebootMethod,
    build_reboot_job,
    job_state_from_object,
    label_value,
    maintenance_job_name,
    reboot_job_name,
)
from pitstop import contract

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
BOOT = "4c1e3f5a-9b2d-4e6f-8a1b-2c3d4e5f6a7b"


def build(method: RebootMethod = RebootMethod.DBUS, **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "node": "worker-1",
        "boot_id": BOOT,
        "method": method,
        "namespace": "pitstop-system",
        "image": "ghcr.io/pitstop/reboot:1",
        "window": "weekend",
    }
    arguments.update(overrides)
    return build_reboot_job(**arguments)


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def container(job: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod_spec(job)["containers"]
    return only


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "node",
    [
        "worker-1",
        "ip-10-0-3-17.eu-west-1.compute.internal",
        "Node_With.CAPS",
        "a" * 253,
        "----",
        "x",
    ],
)
def test_job_names_are_dns_labels_that_keep_the_node_readable(node: str) -> None:
    name = reboot_job_name(node, BOOT)
    assert len(name) <= 63
    assert DNS_LABEL.match(name), name
    assert name.startswith("reboot-")
    readable = re.sub(r"[^a-z0-9-]+", "-", node.lower()).strip("-")
    if readable:
        assert readable[:20].strip("-") in name


def test_job_names_are_deterministic_per_node_and_boot() -> None:
    assert reboot_job_name("worker-1", BOOT) == reboot_job_name("worker-1", BOOT)
    assert reboot_job_name("worker-1", BOOT) != reboot_job_name("worker-1", BOOT + "x")
    assert reboot_job_name("worker-1", BOOT) != reboot_job_name("worker-2", BOOT)
    # Long node names that differ only past the truncation point still get different names.
    long_a, long_b = "n" * 80 + "a", "n" * 80 + "b"
    assert reboot_job_name(long_a, BOOT) != reboot_job_name(long_b, BOOT)
    # Node names that sanitize the same (dot versus dash) still differ by the hash.
    assert reboot_job_name("a.b", BOOT) != reboot_job_name("a-b", BOOT)


def test_label_values_are_kept_when_valid_and_hashed_when_not() -> None:
    assert label_value(BOOT) == BOOT
    for text in ("x" * 64, "has space", "-leading", "a/b"):
        value = label_value(text)
        assert len(value) <= 63 and LABEL_VALUE.match(value) and value != text
        assert label_value(text) == value


# -- common shape ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(RebootMethod))
def test_every_method_gets_the_safety_envelope(method: RebootMethod) -> None:
    job = build(method, ttl_seconds_after_finished=600)
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["name"] == reboot_job_name("worker-1", BOOT)
    assert job["metadata"]["namespace"] == "pitstop-system"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["ttlSecondsAfterFinished"] == 600
    spec = pod_spec(job)
    assert spec["nodeName"] == "worker-1"
    assert {"operator": "Exists"} in spec["tolerations"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    expected_labels = {
        contract.JOB_NODE_LABEL: "worker-1",
        contract.JOB_BOOT_ID_LABEL: BOOT,
        contract.MANAGED_BY_LABEL: contract.MANAGED_BY_VALUE,
    }
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert labels == expected_labels
    assert job["metadata"]["annotations"][contract.WINDOW_ANNOTATION] == "weekend"
    assert container(job)["image"] == "ghcr.io/pitstop/reboot:1"
    assert container(job)["command"][0] == "pitstop-reboot"


def test_a_long_boot_id_is_hashed_in_the_label_and_kept_in_an_annotation() -> None:
    boot = "b" * 100
    job = build(boot_id=boot)
    value = job["metadata"]["labels"][contract.JOB_BOOT_ID_LABEL]
    assert len(value) <= 63 and value != boot
    assert job["metadata"]["annotations"][contract.JOB_BOOT_ID_LABEL] == boot


def test_dbus_is_root_without_capabilities_and_the_bus_socket() -> None:
    job = build(RebootMethod.DBUS)
    security = container(job)["securityContext"]
    assert security["runAsUser"] == 0
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in security
    assert pod_spec(job).get("hostPID") is False
    (volume,) = pod_spec(job)["volumes"]
    assert volume["hostPath"] == {"path": "/run/dbus/system_bus_socket", "type": "Socket"}
    (mount,) = container(job)["volumeMounts"]
    assert mount == {"name": volume["name"], "mountPath": "/run/dbus/system_bus_socket"}
    assert container(job)["command"] == ["pitstop-reboot", "dbus", "--boot-id", BOOT]


def test_signal_has_host_pid_and_only_cap_kill() -> None:
    job = build(RebootMethod.SIGNAL)
    security = container(job)["securityContext"]
    assert pod_spec(job)["hostPID"] is True
    assert security["runAsUser"] == 0
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["KILL"]}
    assert security["allowPrivilegeEscalation"] is False
    assert "privileged" not in security
    assert "volumes" not in pod_spec(job)
    assert container(job)["command"] == ["pitstop-reboot", "signal", "--boot-id", BOOT]


def test_command_is_privileged_with_host_pid() -> None:
    job = build(RebootMethod.COMMAND)
    assert pod_spec(job)["hostPID"] is True
    assert container(job)["securityContext"]["privileged"] is True
    assert container(job)["command"] == ["pitstop-reboot", "command", "--boot-id", BOOT]


def test_host_agent_only_writes_into_the_approval_directory() -> None:
    job = build(RebootMethod.HOST_AGENT, host_agent_directory="/var/lib/custom")
    security = container(job)["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    assert pod_spec(job).get("hostPID") is False
    (volume,) = pod_spec(job)["volumes"]
    assert volume["hostPath"] == {"path": "/var/lib/custom", "type": "DirectoryOrCreate"}
    (mount,) = container(job)["volumeMounts"]
    assert mount["mountPath"] == "/approvals" and mount["name"] == volume["name"]
    assert container(job)["command"] == [
        "pitstop-reboot",
        "approve",
        "--directory",
        "/approvals",
        "--boot-id",
        BOOT,
    ]


@pytest.mark.parametrize("method", list(RebootMethod))
def test_every_built_in_method_names_the_boot_it_is_for(method: RebootMethod) -> None:
    # A Job made while the node was down for a reboot already under way runs on the next boot:
    # the helper (or the host agent) does nothing there, seeing the boot has changed.
    command = container(build(method, boot_id="b00t-7"))["command"]
    assert command[-2:] == ["--boot-id", "b00t-7"]


@pytest.mark.parametrize("boot_id", ["", "-starts-with-dash", "a b", "x" * 129, "abc\n", "../x"])
@pytest.mark.parametrize("method", [RebootMethod.DBUS, RebootMethod.SIGNAL, RebootMethod.COMMAND])
def test_a_boot_id_that_is_not_plain_gives_the_unchecked_shape(
    method: RebootMethod, boot_id: str
) -> None:
    # The Job policy allows only plain boot IDs in a command; the helper then runs unchecked.
    assert container(build(method, boot_id=boot_id))["command"] == [
        "pitstop-reboot",
        method.lower(),
    ]


def test_methods_accept_their_string_values() -> None:
    assert build("Signal") == build(RebootMethod.SIGNAL)
    with pytest.raises(ValueError):
        build("Teleport")


# -- the window's own template -------------------------------------------------------------------


USER_TEMPLATE: dict[str, Any] = {
    "metadata": {
        "labels": {"team": "ops", contract.MANAGED_BY_LABEL: "someone-else"},
        "annotations": {"note": "ours"},
    },
    "spec": {
        "restartPolicy": "OnFailure",
        "nodeName": "somewhere-else",
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "x"}],
        "serviceAccountName": "rebooter",
        "containers": [
            {
                "name": "mine",
                "image": "example.com/reboot:2",
                "command": ["/bin/reboot-it"],
                "securityContext": {"privileged": True},
            }
        ],
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
    },
}


def test_a_user_template_keeps_its_containers_and_gets_the_envelope() -> None:
    job = build(RebootMethod.DBUS, job_template=USER_TEMPLATE)
    spec = pod_spec(job)
    assert spec["containers"] == USER_TEMPLATE["spec"]["containers"]
    assert spec["volumes"] == USER_TEMPLATE["spec"]["volumes"]
    assert spec["serviceAccountName"] == "rebooter"
    assert spec["nodeName"] == "worker-1"
    assert spec["restartPolicy"] == "Never"
    assert spec["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "x"},
        {"operator": "Exists"},
    ]
    assert spec["automountServiceAccountToken"] is False
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["ttlSecondsAfterFinished"] == 3600
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "ops"
    assert labels[contract.MANAGED_BY_LABEL] == contract.MANAGED_BY_VALUE
    assert labels[contract.JOB_NODE_LABEL] == "worker-1"
    assert job["spec"]["template"]["metadata"]["annotations"]["note"] == "ours"
    # The window's template itself is not modified.
    assert USER_TEMPLATE["spec"]["nodeName"] == "somewhere-else"
    assert "automountServiceAccountToken" not in USER_TEMPLATE["spec"]


def test_a_user_template_may_opt_into_a_token_and_already_tolerate_everything() -> None:
    template = {
        "spec": {
            "automountServiceAccountToken": True,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "c", "image": "i"}],
        }
    }
    spec = pod_spec(build(job_template=template))
    assert spec["automountServiceAccountToken"] is True
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert build(job_template=template)["spec"]["template"]["metadata"]["labels"]


# -- state -----------------------------------------------------------------------------------------


def test_job_state_from_conditions() -> None:
    running = job_state_from_object({"status": {"active": 1}})
    assert running.phase is JobPhase.RUNNING and "1 active" in running.message
    done = job_state_from_object(
        {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    )
    assert done.phase is JobPhase.SUCCEEDED
    failed = job_state_from_object(
        {
            "status": {
                "conditions": [
                    {
                        "type": "FailureTarget",
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "message": "Job has reached the specified backoff limit",
                    },
                ]
            }
        }
    )
    assert failed.phase is JobPhase.FAILED
    assert failed.message == "BackoffLimitExceeded: Job has reached the specified backoff limit"
    not_yet = job_state_from_object(
        {"status": {"conditions": [{"type": "Failed", "status": "False"}]}}
    )
    assert not_yet.phase is JobPhase.RUNNING


def test_a_later_maintenance_at_the_same_boot_gets_a_job_of_its_own() -> None:
    # Fault testing: a node released in WaitingForNode was admitted again at the same boot,
    # found "reboot Job ... already exists" (the old one) and took it for its own reboot.
    first = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    name = maintenance_job_name("worker-1", BOOT, 1, first)
    assert name == maintenance_job_name("worker-1", BOOT, 1, first)  # a crashed brain resumes
    assert name != maintenance_job_name("worker-1", BOOT, 1, first + timedelta(seconds=1))
    assert name != maintenance_job_name("worker-1", BOOT, 2, first)
    assert name.startswith("reboot-worker-1-") and len(name) <= 63


def test_the_boot_id_pattern_is_the_helpers_and_the_job_policys() -> None:
    # Three places accept a boot ID in the Job's command: they must agree.
    chart = Path(__file__).resolve().parents[3] / "charts/pitstop/templates"
    policy = (chart / "job-admission-policy.yaml").read_text()
    anchored = f"^{PLAIN_BOOT_ID_PATTERN.pattern}$"
    assert reboot_helper._BOOT_ID_PATTERN.pattern == anchored
    assert policy.count(f"matches('{anchored}')") == 2  # the approve and the other methods
