"""The local control plane is real: each behaviour Pitstop depends on is checked here."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster.controlplane import ControlPlane
from localcluster.nodes import (
    KWOK_TOLERATION,
    boot_id,
    create_bare_pod,
    create_deployment,
    create_nodes,
    delete_nodes,
    is_ready,
    running_pods,
    simulate_reboot,
    wait_for,
)

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.foundation.pitstop.dev
spec:
  group: foundation.pitstop.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1, maximum: 10}
"""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_crd_schema_rejects_a_bad_object(cluster: ControlPlane, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=CRD)
    cluster.wait_for_crd("widgets.foundation.pitstop.dev")
    good = {
        "apiVersion": "foundation.pitstop.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "ok", "namespace": namespace},
        "spec": {"size": 3},
    }
    bad = {**good, "metadata": {"name": "bad", "namespace": namespace}, "spec": {"size": 99}}
    cluster.kubectl("create", "-f", "-", input=json.dumps(good))
    refused = cluster.kubectl("create", "-f", "-", input=json.dumps(bad), check=False)
    assert refused.returncode != 0
    assert "spec.size" in refused.stderr and "less than or equal to 10" in refused.stderr


def test_eviction_under_a_pdb_with_no_disruptions_allowed_is_refused(
    cluster: ControlPlane, api_client: client.ApiClient, namespace: str
) -> None:
    node = unique("evict")
    create_nodes(api_client, [node])
    try:
        create_deployment(
            api_client,
            namespace,
            "guarded",
            replicas=1,
            node_selector={"kubernetes.io/hostname": node},
            pdb_min_available=1,
        )
        pod = wait_for(lambda: running_pods(api_client, namespace, "app=guarded"), "pod running")[0]
        policy = client.PolicyV1Api(api_client)
        wait_for(
            lambda: (
                policy.read_namespaced_pod_disruption_budget(
                    "guarded", namespace
                ).status.observed_generation
            ),
            "the disruption controller to fill the PDB status",
        )
        eviction = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod.metadata.name, "namespace": namespace},
        }
        with pytest.raises(ApiException) as refused:
            client.CoreV1Api(api_client).create_namespaced_pod_eviction(
                pod.metadata.name, namespace, eviction
            )
        assert refused.value.status == 429
    finally:
        delete_nodes(api_client, [node])


def test_a_job_completes_on_a_kwok_node(
    cluster: ControlPlane, api_client: client.ApiClient, namespace: str
) -> None:
    node = unique("job")
    create_nodes(api_client, [node])
    try:
        client.BatchV1Api(api_client).create_namespaced_job(
            namespace,
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": "once"},
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "nodeName": node,
                            "tolerations": [KWOK_TOLERATION],
                            "containers": [{"name": "run", "image": "registry.invalid/fake:1"}],
                        }
                    },
                },
            },
        )

        def complete() -> bool:
            job = client.BatchV1Api(api_client).read_namespaced_job("once", namespace)
            return any(
                c.type == "Complete" and c.status == "True" for c in job.status.conditions or []
            )

        wait_for(complete, "the Job to complete", timeout=60)
    finally:
        delete_nodes(api_client, [node])


def test_a_stale_resource_version_gets_409(api_client: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    created = core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "lock"}, "data": {"holder": "a"}}
    )
    stale = created.metadata.resource_version
    core.replace_namespaced_config_map(
        "lock",
        namespace,
        {"metadata": {"name": "lock", "resourceVersion": stale}, "data": {"holder": "b"}},
    )
    with pytest.raises(ApiException) as conflict:
        core.replace_namespaced_config_map(
            "lock",
            namespace,
            {"metadata": {"name": "lock", "resourceVersion": stale}, "data": {"holder": "c"}},
        )
    assert conflict.value.status == 409
    assert core.read_namespaced_config_map("lock", namespace).data == {"holder": "b"}


def denying_policy(name: str, rules: str) -> str:
    """A ValidatingAdmissionPolicy `name` that fails closed, whose spec goes on with `rules`
    (YAML indented two spaces), and the binding that makes it deny what it does not admit."""
    return f"""
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: {name}}}
spec:
  failurePolicy: Fail
{rules}---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: {name}}}
spec:
  policyName: {name}
  validationActions: [Deny]
"""


NODE_POLICY_RULES = """\
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["UPDATE"]
      resources: ["nodes"]
  matchConditions:
  - name: only-this-service-account
    expression: request.userInfo.username == "USER"
  validations:
  - expression: >-
      "authentication.kubernetes.io/node-name" in request.userInfo.extra &&
      request.userInfo.extra["authentication.kubernetes.io/node-name"][0] == object.metadata.name
    message: may only change its own node
"""


def test_an_admission_policy_limits_a_service_account_to_its_own_node(
    cluster: ControlPlane, api_client: client.ApiClient, namespace: str
) -> None:
    own, other = unique("own"), unique("other")
    create_nodes(api_client, [own, other])
    user = f"system:serviceaccount:{namespace}:reporter"
    name = unique("own-node-only")
    try:
        cluster.kubectl("create", "serviceaccount", "reporter", "-n", namespace)
        cluster.kubectl("create", "clusterrole", name, "--verb=get,patch", "--resource=nodes")
        cluster.kubectl(
            "create",
            "clusterrolebinding",
            name,
            f"--clusterrole={name}",
            f"--serviceaccount={namespace}:reporter",
        )
        cluster.kubectl(
            "apply", "-f", "-", input=denying_policy(name, NODE_POLICY_RULES.replace("USER", user))
        )

        def label(node: str) -> tuple[int, str]:
            result = cluster.kubectl(
                "label",
                "node",
                node,
                "--overwrite",
                "pitstop.dev/reboot-required=true",
                "--as",
                user,
                "--as-user-extra",
                f"authentication.kubernetes.io/node-name={own}",
                check=False,
            )
            return result.returncode, result.stderr

        # A new policy takes a moment to be loaded by the API server.
        wait_for(lambda: label(other)[0] != 0, "the policy to deny another node", timeout=30)
        code, error = label(other)
        assert code != 0 and "may only change its own node" in error
        assert label(own)[0] == 0
        labels = client.CoreV1Api(api_client).read_node(own).metadata.labels
        assert labels["pitstop.dev/reboot-required"] == "true"
    finally:
        for kind in (
            "validatingadmissionpolicybinding",
            "validatingadmissionpolicy",
            "clusterrolebinding",
            "clusterrole",
        ):
            cluster.kubectl("delete", kind, name, "--ignore-not-found", check=False)
        delete_nodes(api_client, [own, other])


def test_simulated_reboot_changes_boot_id_and_ready(
    api_client: client.ApiClient, tmp_path: Path
) -> None:
    node = unique("reboot")
    create_nodes(api_client, [node])
    core = client.CoreV1Api(api_client)
    sentinel = tmp_path / "reboot-required"
    sentinel.write_text("linux-image\n")
    try:
        before = boot_id(api_client, node)
        assert before
        seen_not_ready: list[bool] = []

        import threading

        def watch_ready() -> None:
            wait_for(lambda: not is_ready(core.read_node(node)), "Ready False", timeout=10)
            seen_not_ready.append(True)

        watcher = threading.Thread(target=watch_ready)
        watcher.start()
        after = simulate_reboot(api_client, node, down_seconds=1.5, sentinel=sentinel)
        watcher.join()
        assert seen_not_ready == [True]
        assert after != before
        assert boot_id(api_client, node) == after
        assert is_ready(core.read_node(node))
        assert not sentinel.exists()
        # kwok keeps the new bootID on later heartbeats (it does not reset what we wrote).
        core.patch_node(node, {"metadata": {"labels": {"touched": "yes"}}})
        assert boot_id(api_client, node) == after
    finally:
        delete_nodes(api_client, [node])


def test_a_running_pod_marked_not_ready_by_a_controller_is_ready_again(
    api_client: client.ApiClient, namespace: str
) -> None:
    """The node lifecycle controller marks a pod NotReady when it is bound to a node that the
    controller last saw NotReady (its view is refreshed every 5 s: a node just back from a
    simulated reboot). A kubelet would report the pod Ready again, and kwok does here too.
    kwok's own stages only ready Pending pods: such a pod used to stay NotReady for good, and
    its PodDisruptionBudget refused every eviction from then on."""
    node = unique("ready")
    create_nodes(api_client, [node])
    core = client.CoreV1Api(api_client)
    try:
        create_bare_pod(api_client, namespace, "marked", node)

        def marked_pod_ready() -> bool:
            return is_ready(core.read_namespaced_pod("marked", namespace))

        wait_for(marked_pod_ready, "the pod Ready")
        # What the controller's MarkPodsNotReady writes.
        core.patch_namespaced_pod_status(
            "marked",
            namespace,
            {"status": {"conditions": [{"type": "Ready", "status": "False"}]}},
        )
        assert not marked_pod_ready()
        wait_for(marked_pod_ready, "the pod Ready again", 10)
        assert core.read_namespaced_pod("marked", namespace).status.phase == "Running"
    finally:
        delete_nodes(api_client, [node])
