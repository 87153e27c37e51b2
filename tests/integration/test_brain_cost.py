"""What a node reboot costs the API server, counted by the API server itself.

The brain runs as its own user; a FlowSchema matching that user makes the API server count
its requests (`apiserver_flowcontrol_dispatched_requests_total{flow_schema}`), watches
included. Evictions are counted apart (`apiserver_request_total{subresource="eviction"}`), and
so are the status writer election's Lease requests (a FlowSchema of their own, matched first):
they follow status writes (at most one renewal every 5 s while the brain writes status; none
while idle), not reboots.

The brain counts its own requests too (`pitstop_api_requests_total`, one wrapper around its
client's transport): its evictions must match the API server's count exactly (the drain's
requests reach the brain's metrics), and the rest can only be fewer than the server's (the
server also counts kopf's own watches, which go through kopf's client).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from kubernetes import client

from localcluster.controlplane import ControlPlane
from tests.integration.pitstop_env import PitstopEnv
from tests.integration.test_brain_integrations import scrape


def _brain_flow_schema(name: str, precedence: int, rules: dict[str, Any]) -> dict[str, Any]:
    """A FlowSchema that makes the API server count the brain user's requests that `rules`
    match (the lowest matchingPrecedence matches first)."""
    return {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": name},
        "spec": {
            "matchingPrecedence": precedence,
            "priorityLevelConfiguration": {"name": "workload-high"},
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [{"subjects": [{"kind": "User", "user": {"name": "pitstop-brain"}}], **rules}],
        },
    }


FLOW_SCHEMA = _brain_flow_schema(
    "pitstop-brain-requests",
    100,
    {
        "resourceRules": [
            {
                "verbs": ["*"],
                "apiGroups": ["*"],
                "resources": ["*"],
                "clusterScope": True,
                "namespaces": ["*"],
            }
        ],
        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
    },
)
# The brain's Lease requests (brain/status_writer.py), matched before the schema above.
LEASE_FLOW_SCHEMA = _brain_flow_schema(
    "pitstop-brain-leases",
    99,
    {
        "resourceRules": [
            {
                "verbs": ["*"],
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "namespaces": ["*"],
            }
        ]
    },
)
NODES = 6
# The brief asked for "about 15 requests besides evictions" per node (kured spends 36-63), issue
# 18 for <= 15. Measured: 15.2-15.5 per node (was 24.0 before the cost work), 16.0-16.3 once the
# health gate waited for the control plane's not-ready taint, 16.8-17.2 once Rebooting also read
# the Node before its Job (no Job for a node found uncordoned), 18.3 once the health gate also
# waited for the node's DaemonSet pods, 17.0 before issue 18's cost work; then 14.5-14.8 without
# RebootStarted and with HealthCheck and Done in one write when the gate passes at once, and
# 12.0-12.3 with one budget watch for the rollout and no pod list on a node without DaemonSet pods.
# For 6 nodes, typically:
#   18-21 lock writes: Rebooting, WaitingForNode, and the release (which the next node's
#      admission rides on, 4 of 6 nodes here); HealthCheck only for a node whose gate waits (the
#      control plane had not cleared not-ready yet), written with what it waits for; the first
#      admission creates the lock
#   13 Events: Started and Rebooted on each Node; RolloutComplete on the window
#   16 Node patches: pending taint (nodes that had to wait), cordon+mark, release
#    6 pod watch-lists (the node's pods, then their deletions, in one request)
#    1 PDB watch-list for the whole rollout (the budgets covering the evicted pods at each
#      drain's end, their health at each health gate), no PDB list or read per node
#    0 pod lists (the health gate's DaemonSet pods: these nodes had none before their reboot)
#    6 Node reads (Rebooting: is it still cordoned?), 6 Job creates (no Job read: the nodes are
#      back before the 30 s Job check); now and then a Node read while a drain runs (the index
#      showed the node schedulable a moment after our cordon: the API is asked before stopping)
#    5-6 window status writes (at most one per window every 2 s)
# This bound (measured + ~0.7) catches the return of any request per node; the bounds by kind
# below say which one came back.
BUDGET_PER_NODE = 13.0
# The brain's own count by kind, for the whole rollout: what issue 18's cost work removed.
BOUNDS_BY_KIND = {
    "create events": 2 * NODES + 1,  # Started and the outcome per node; RolloutComplete
    "list pods": 0,  # no DaemonSet pod on these nodes: the health gate lists none
    "poddisruptionbudgets": 2,  # list, read or watch: one watch (a reopen at most) per rollout
    "update configmaps": 4 * NODES,  # at most one HealthCheck write per node on top of 3
}


def counters(plane: ControlPlane) -> tuple[float, float, float]:
    text = plane.kubectl("get", "--raw", "/metrics").stdout

    def dispatched(schema: str) -> float:
        return sum(
            float(value)
            for value in re.findall(
                r"^apiserver_flowcontrol_dispatched_requests_total\{[^}]*flow_schema="
                rf'"{schema}"[^}}]*\}} (\S+)$',
                text,
                re.MULTILINE,
            )
        )

    evictions = sum(
        float(value)
        for value in re.findall(
            r'^apiserver_request_total\{[^}]*subresource="eviction"[^}]*\} (\S+)$',
            text,
            re.MULTILINE,
        )
    )
    return dispatched("pitstop-brain-requests"), evictions, dispatched("pitstop-brain-leases")


def own_by_kind(port: int) -> dict[str, float]:
    """The brain's own count of its requests by "verb resource" (Leases aside)."""
    kinds: dict[str, float] = {}
    for (name, labels), value in scrape(port).items():
        fields = dict(labels)
        if name != "pitstop_api_requests_total" or fields.get("resource") == "leases":
            continue
        kind = f"{fields.get('verb')} {fields.get('resource')}"
        kinds[kind] = kinds.get(kind, 0.0) + value
    return kinds


def own_counts(port: int) -> tuple[float, float]:
    """The brain's own count of its requests (Leases aside), and of its evictions."""
    requests = evictions = 0.0
    for (name, labels), value in scrape(port).items():
        resource = dict(labels).get("resource")
        if name != "pitstop_api_requests_total" or resource == "leases":
            continue
        requests += value
        if resource == "pods/eviction":
            evictions += value
    return requests, evictions


def test_a_node_reboot_costs_about_fifteen_requests(env: PitstopEnv) -> None:
    env.plane.kubectl("apply", "-f", "-", input=json.dumps(FLOW_SCHEMA))
    env.plane.kubectl("apply", "-f", "-", input=json.dumps(LEASE_FLOW_SCHEMA))
    nodes = env.add_nodes(NODES, zones=2)
    workload = env.web_workload(NODES)
    window = env.window("cost", {"maxUnavailable": 2, "drain": {"timeout": "60s"}})
    with env.hosts() as hosts:
        brain = env.start_brain()
        # Warm up: the brain starts, lists and watches, writes the window's status.
        env.wait(lambda: env.condition(window, "Ready").get("status") == "True", "Ready", 60)
        time.sleep(3)
        brain_before, evictions_before, leases_before = counters(env.plane)
        own_before, own_evictions_before = own_counts(brain.metrics_port)
        kinds_before = own_by_kind(brain.metrics_port)
        started = time.monotonic()
        env.flag(nodes)
        env.wait(
            lambda: (
                len(hosts.reboots) == NODES
                and not env.lock().get("nodes")
                and env.get_window(window)["status"]["counts"]["done"] == NODES
            ),
            "every node rebooted",
            150,
            explain=lambda: env.workload_report(workload),
        )
        time.sleep(2)
        brain_after, evictions_after, leases_after = counters(env.plane)
        own_after, own_evictions_after = own_counts(brain.metrics_port)
        kinds_after = own_by_kind(brain.metrics_port)
        elapsed = time.monotonic() - started
    requests = brain_after - brain_before
    evictions = evictions_after - evictions_before
    leases = leases_after - leases_before
    per_node = (requests - evictions) / NODES
    own = own_after - own_before
    own_evictions = own_evictions_after - own_evictions_before
    print(
        f"\nbrain requests for {NODES} node reboots in {elapsed:.0f} s: {requests:.0f} "
        f"({evictions:.0f} evictions); {per_node:.1f} per node besides evictions; and "
        f"{leases:.0f} Lease requests of the status writer election (apart); the "
        f"brain's own count: {own:.0f} ({own_evictions:.0f} evictions)"
    )
    # The brain's own count by kind, per node: what to look at when the bound is exceeded.
    for kind in sorted(
        kinds_after, key=lambda kind: -(kinds_after[kind] - kinds_before.get(kind, 0))
    ):
        spent = kinds_after[kind] - kinds_before.get(kind, 0.0)
        if spent:
            print(f"  {spent / NODES:5.2f} per node  {spent:4.0f}  {kind}")
    kopf = requests - own
    print(f"  {kopf / NODES:5.2f} per node  {kopf:4.0f}  not the brain's client (kopf)")
    assert evictions >= NODES, "the drain did not go through the Eviction API"
    assert requests > 0, "the flow schema counted nothing: the measurement is broken"
    assert per_node <= BUDGET_PER_NODE
    for kind, bound in BOUNDS_BY_KIND.items():
        spent = sum(
            count - kinds_before.get(name, 0.0)
            for name, count in kinds_after.items()
            if name == kind or name.endswith(f" {kind}")
        )
        assert spent <= bound, f"{kind}: {spent:.0f} requests (at most {bound})"
    # Every eviction went through the brain's one client wrapper and reached its metrics.
    assert own_evictions == evictions
    assert 0 < own <= requests
    # At most one renewal every 5 s while status is written (the holder renews on its own last
    # write, without a read, before a status write once its hold is 5 s old), whatever the
    # number of reboots; and counted: the schema of its own matched them.
    assert 0 < leases <= elapsed / 5 + 2
    client.CoreV1Api(env.api).delete_namespace(workload)
