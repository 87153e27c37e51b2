"""A Pitstop installation on the shared local control plane, private to one test.

Each test gets its own brain namespace (so its own lock), its own reboot-Job namespace, its own
nodes (labelled with the test's id, which its windows select), and stops its brains at the end.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes import client

from localcluster.controlplane import ControlPlane
from localcluster.hosts import HostSimulator, flag_node
from localcluster.nodes import (
    create_deployment,
    create_namespace,
    create_nodes,
    delete_namespace,
    delete_nodes,
    running_pods,
)
from localcluster.observe import LockObserver
from localcluster.pitstop_processes import BrainProcess, install_pitstop_api

TEST_LABEL = "pitstop-test/run"


@dataclass
class PitstopEnv:
    plane: ControlPlane
    api: client.ApiClient
    logs: Path
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    nodes: list[str] = field(default_factory=list)
    zones: dict[str, str] = field(default_factory=dict)
    brains: list[BrainProcess] = field(default_factory=list)
    windows: list[str] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return f"pitstop-{self.run}"

    @property
    def job_namespace(self) -> str:
        return f"reboot-{self.run}"

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    def install(self) -> None:
        install_pitstop_api(self.plane, self.namespace, self.job_namespace)

    def add_nodes(self, count: int, zones: int = 2) -> list[str]:
        names = [f"{self.run}-n{len(self.nodes) + index}" for index in range(count)]
        for index, name in enumerate(names):
            zone = f"zone-{'ab'[index % zones] if zones <= 2 else index % zones}"
            create_nodes(self.api, [name], labels={TEST_LABEL: self.run}, zone=zone)
            self.zones[name] = zone
        self.nodes.extend(names)
        return names

    def flag(self, names: list[str]) -> None:
        # Distinct, ordered flag times make the planner's order predictable (oldest first).
        # They lie within the nodes' life: the brain ignores a flag time before a node's
        # creation (node_view.believable_since).
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
        for index, name in enumerate(names):
            since = (start + timedelta(seconds=index)).strftime("%Y-%m-%dT%H:%M:%SZ")
            flag_node(self.api, name, since=since, reason="test")

    def window(self, name: str, spec: dict[str, Any]) -> str:
        full = f"{self.run}-{name}"
        body = {
            "apiVersion": "pitstop.dev/v1alpha1",
            "kind": "NodesMaintenanceWindow",
            "metadata": {"name": full},
            "spec": {"nodeSelector": {"matchLabels": {TEST_LABEL: self.run}}, **spec},
        }
        self.plane.kubectl("apply", "-f", "-", input=json.dumps(body))
        if full not in self.windows:
            self.windows.append(full)
        return full

    def patch_window(self, name: str, patch: dict[str, Any]) -> None:
        self.plane.kubectl("patch", "nmw", name, "--type=merge", "-p", json.dumps(patch))

    def get_window(self, name: str) -> dict[str, Any]:
        return json.loads(self.plane.kubectl("get", "nmw", name, "-o", "json").stdout)

    def condition(self, window: str, kind: str) -> dict[str, Any]:
        for condition in self.get_window(window).get("status", {}).get("conditions", []):
            if condition["type"] == kind:
                return dict(condition)
        return {}

    def wait_condition(
        self, window: str, kind: str, status: str, timeout: float = 60.0
    ) -> dict[str, Any]:
        """Wait until the window's condition `kind` has `status`; return the condition."""
        found: dict[str, Any] = self.wait(
            lambda: (
                (condition := self.condition(window, kind)).get("status") == status and condition
            ),
            f"{kind}={status} on {window}",
            timeout,
        )
        return found

    def lock(self) -> dict[str, Any]:
        try:
            config_map = self.core.read_namespaced_config_map("pitstop-lock", self.namespace)
        except client.exceptions.ApiException:
            return {}
        return dict(json.loads((config_map.data or {}).get("state.json") or "{}"))

    def jobs(self) -> list[Any]:
        return list(client.BatchV1Api(self.api).list_namespaced_job(self.job_namespace).items)

    def start_brain(self, **kwargs: Any) -> BrainProcess:
        brain = BrainProcess(
            self.plane,
            self.logs / f"brain-{len(self.brains)}.log",
            namespace=self.namespace,
            job_namespace=self.job_namespace,
            **kwargs,
        )
        brain.start()
        self.brains.append(brain)
        return brain

    def hosts(self, **kwargs: Any) -> HostSimulator:
        return HostSimulator(self.api, self.job_namespace, unflag_on_reboot=True, **kwargs)

    def observer(self) -> LockObserver:
        return LockObserver(self.api, self.namespace, zones=self.zones)

    def node(self, name: str) -> Any:
        return self.core.read_node(name)

    def wait(
        self,
        check: Any,
        what: str,
        timeout: float = 60.0,
        explain: Callable[[], str] | None = None,
    ) -> Any:
        """Wait for `check` to be true; on timeout, fail with `explain()`'s account of why."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            for brain in self.brains:
                if brain.process is not None and not brain.running:
                    raise brain.failure("died during the test")
            last = check()
            if last:
                return last
            time.sleep(0.2)
        logs = "\n".join(str(brain.log_path) for brain in self.brains)
        account = f"\n{explain()}" if explain is not None else ""
        raise AssertionError(
            f"timed out waiting for {what} (last: {last!r}); brain logs:\n{logs}{account}"
        )

    def web_workload(self, replicas: int) -> str:
        """A new namespace with `replicas` web pods on this run's nodes, a PDB letting at most
        one be unavailable, all running: the workload a drain must respect (its namespace)."""
        namespace = create_namespace(self.api)
        create_deployment(
            self.api,
            namespace,
            "web",
            replicas=replicas,
            node_selector={TEST_LABEL: self.run},
            pdb_max_unavailable=1,
        )
        self.wait(lambda: len(running_pods(self.api, namespace, "app=web")) == replicas, "web pods")
        return namespace

    def workload_report(self, namespace: str) -> str:
        """Where a workload's pods are, how ready, and what its budget allows: why a drain waits."""
        lines = [f"== workload in {namespace}"]
        policy = client.PolicyV1Api(self.api)
        for budget in policy.list_namespaced_pod_disruption_budget(namespace).items:
            status = budget.status
            lines.append(
                f"pdb {budget.metadata.name}: healthy {status.current_healthy}/"
                f"{status.desired_healthy} desired, {status.disruptions_allowed} allowed, "
                f"expected {status.expected_pods}, disrupted {status.disrupted_pods or {}}"
            )
        for pod in self.core.list_namespaced_pod(namespace).items:
            ready = [
                f"{condition.status}({condition.reason or ''})"
                for condition in pod.status.conditions or []
                if condition.type == "Ready"
            ]
            lines.append(
                f"pod {pod.metadata.name} on {pod.spec.node_name}: {pod.status.phase}, "
                f"ready {ready}, deleting {pod.metadata.deletion_timestamp}"
            )
        for name in self.nodes:
            node = self.core.read_node(name)
            lines.append(f"node {name}: unschedulable {bool(node.spec.unschedulable)}")
        for event in self.core.list_namespaced_event(namespace).items:
            lines.append(
                f"event {event.reason} {event.involved_object.kind}/{event.involved_object.name}"
                f" x{event.count or 1} ({event.source.component}): {event.message}"
            )
        return "\n".join(lines)

    def close(self) -> None:
        for brain in self.brains:
            brain.stop()
        for window in self.windows:
            self.plane.kubectl(
                "delete", "nmw", window, "--ignore-not-found", "--wait=false", check=False
            )
            # No brain runs any more to remove kopf's finalizer: drop it so the window goes.
            self.plane.kubectl(
                "patch",
                "nmw",
                window,
                "--type=merge",
                "-p",
                '{"metadata":{"finalizers":null}}',
                check=False,
            )
        delete_nodes(self.api, self.nodes)
        for namespace in (self.namespace, self.job_namespace):
            delete_namespace(self.api, namespace)


@contextlib.contextmanager
def pitstop_env(plane: ControlPlane, api: client.ApiClient, logs: Path) -> Iterator[PitstopEnv]:
    env = PitstopEnv(plane, api, logs)
    env.install()
    try:
        yield env
    finally:
        env.close()


def done_nodes(env: PitstopEnv, window: str) -> set[str]:
    """The nodes the window's status shows Done."""
    status = env.get_window(window).get("status", {})
    return {entry["name"] for entry in status.get("nodes", []) if entry["phase"] == "Done"}
