"""A window the brain cannot carry out fails before a node is touched, visibly (issue 16, 8).

The CRD checks the jobTemplate's shape; what only the API server knows (here a volumeMount of
a volume the pod does not have) is found by the brain's dry run of the reboot Job, before
admission, instead of a node drained and then stuck in Rebooting on every pass.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from kubernetes import client

from brain.core.window import parse_window_spec
from brain.kube import Kube
from brain.reboot.job_check import RebootJobCheck
from brain.reboot.reboot_job import RebootMethod, build_reboot_job
from brain.settings import BrainSettings
from tests.integration.pitstop_env import PitstopEnv
from tests.integration.test_control_plane import denying_policy

pytestmark = pytest.mark.cluster

# Passes the CRD (containers with a name and an image); the API server refuses it as a Job.
REFUSED_TEMPLATE = {
    "spec": {
        "containers": [
            {
                "name": "reboot",
                "image": "busybox",
                "command": ["reboot"],
                "volumeMounts": [{"name": "missing", "mountPath": "/host"}],
            }
        ]
    }
}


def window_events(env: PitstopEnv, window: str) -> list[tuple[str, str]]:
    events = env.core.list_namespaced_event(
        "default", field_selector=f"involvedObject.name={window}"
    )
    return [(event.reason, event.message) for event in events.items]


def test_a_window_whose_reboot_job_is_refused_touches_no_node(env: PitstopEnv) -> None:
    nodes = env.add_nodes(1, zones=1)
    env.flag(nodes)
    window = env.window(
        "refused", {"drain": {"timeout": "30s"}, "reboot": {"jobTemplate": REFUSED_TEMPLATE}}
    )
    with env.observer() as observer, env.hosts() as hosts:
        env.start_brain()
        ready = env.wait_condition(window, "Ready", "False", 60)
        assert ready["reason"] == "InvalidSpec"
        assert "reboot Job" in ready["message"] and "volumeMounts" in ready["message"], ready
        env.wait(
            lambda: any(reason == "InvalidSpec" for reason, _ in window_events(env, window)),
            "an InvalidSpec Event on the window",
            30,
        )
        # Several passes later (resync 10 s, and every node change wakes it): nothing touched.
        time.sleep(12)
        assert observer.ever_in_maintenance() == set()
        assert not env.node(nodes[0]).spec.unschedulable
        assert env.jobs() == [] and hosts.reboots == []
        assert env.condition(window, "Ready")["status"] == "False"

        # Fixed (the built-in reboot Job): the window is valid again and the node goes.
        env.patch_window(window, {"spec": {"reboot": {"jobTemplate": None}}})
        env.wait_condition(window, "Ready", "True", 60)
        env.wait(
            lambda: hosts.reboot_count(nodes[0]) == 1 and not env.lock().get("nodes"),
            "the node to be rebooted once the window is fixed",
            90,
        )


# A stand-in for the chart's Job admission policy (reboot.allowedMethods without Signal): it
# denies the reboot Jobs that need the host's PID namespace, in this test's Job namespace only.
NO_HOST_PID_RULES = """\
  matchConstraints:
    namespaceSelector:
      matchLabels: {kubernetes.io/metadata.name: NAMESPACE}
    resourceRules:
    - apiGroups: [batch]
      apiVersions: ["*"]
      operations: [CREATE]
      resources: [jobs]
  validations:
  - expression: "!object.spec.template.spec.?hostPID.orValue(false)"
    message: reboot Jobs with hostPID are not allowed here
    reason: Forbidden
"""


def test_a_window_whose_method_the_job_policy_denies_touches_no_node(env: PitstopEnv) -> None:
    """Before, a Signal window under a policy allowing only DBus drained a node, then failed
    to create its Job on every pass."""
    name = f"no-host-pid-{env.run}"
    manifest = denying_policy(name, NO_HOST_PID_RULES.replace("NAMESPACE", env.job_namespace))
    env.plane.kubectl("apply", "-f", "-", input=manifest)
    try:
        signal_job = build_reboot_job(
            "probe", "probe", RebootMethod.SIGNAL, env.job_namespace, "busybox", "probe"
        )
        # Policies take effect a moment after they are created.
        env.wait(
            lambda: (
                "hostPID are not allowed"
                in env.plane.kubectl(
                    "create",
                    "--dry-run=server",
                    "-f",
                    "-",
                    input=json.dumps(signal_job),
                    check=False,
                ).stderr
            ),
            "the Job policy to take effect",
            60,
        )
        nodes = env.add_nodes(1, zones=1)
        env.flag(nodes)
        window = env.window("signal", {"reboot": {"method": "Signal"}})
        with env.observer() as observer:
            env.start_brain()
            ready = env.wait_condition(window, "Ready", "False", 60)
            assert "Signal method" in ready["message"], ready
            assert "hostPID are not allowed" in ready["message"], ready
            time.sleep(3)
            assert observer.ever_in_maintenance() == set()
            assert not env.node(nodes[0]).spec.unschedulable
            assert env.jobs() == []
    finally:
        env.plane.kubectl("delete", "-f", "-", input=manifest, check=False)


def test_the_dry_run_is_asked_once_per_job_shape_and_again_before_an_admission(
    env: PitstopEnv,
) -> None:
    """A pass costs no request, however old the verdict: an idle brain asks nothing (issue
    18). A changed spec is asked at once; an old verdict again only when a node is about to be
    admitted (a policy may have changed meanwhile)."""
    now = [0.0]
    settings = BrainSettings(job_namespace=env.job_namespace, job_image="busybox")
    kube = Kube(client.ApiClient(env.api.configuration))  # its own client: only its requests
    check = RebootJobCheck(kube, settings, recheck_seconds=60, clock=lambda: now[0])

    def asked() -> int:
        return kube.requests.get("create jobs", 0)

    valid = parse_window_spec({})
    refused = parse_window_spec({"reboot": {"jobTemplate": REFUSED_TEMPLATE}})
    assert asyncio.run(check("w", valid)) is None and asked() == 1
    assert asyncio.run(check("w", valid)) is None and asked() == 1
    assert asyncio.run(check("w", valid, admitting=True)) is None and asked() == 1
    refusal = asyncio.run(check("w", refused))
    assert refusal is not None and asked() == 2
    assert "its jobTemplate" in refusal and 'volumeMounts[0].name: Not found: "missing"' in refusal
    assert asyncio.run(check("w", refused)) == refusal and asked() == 2
    now[0] = 61.0
    assert asyncio.run(check("w", refused)) == refusal and asked() == 2  # idle: no request
    assert asyncio.run(check("w", refused, admitting=True)) == refusal and asked() == 3
    assert asyncio.run(check("w", refused, admitting=True)) == refusal and asked() == 3
    assert asyncio.run(check("other", valid)) is None and asked() == 4  # a window of its own
    assert env.jobs() == []  # dry runs create nothing
    kube.api_client.close()
