"""The brain's integrations with a real brain process: blockers, hooks, notifications, metrics."""

from __future__ import annotations

import base64
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from localcluster.hosts import HostBehaviour
from localcluster.nodes import create_bare_pod, create_namespace, delete_namespace
from tests.brain.loopback import Reply, loopback_server
from tests.integration.pitstop_env import PitstopEnv

QUICK = {"maxUnavailable": 1, "drain": {"timeout": "30s"}}


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on the brain's /metrics (empty while the brain is still starting)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def metric(
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float | None:
    return values.get((name, tuple(sorted(labels.items()))))


def wait_for_metric(
    env: PitstopEnv, port: int, value: float, name: str, **labels: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Scrape until the sample `name{labels}` reads `value`; return that whole scrape."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = env.wait(
        lambda: metric(values := scrape(port), name, **labels) == value and values,
        f"{name}{labels} == {value}",
    )
    return found


def window_events(env: PitstopEnv, window: str) -> list[str]:
    events = env.core.list_namespaced_event(
        "default", field_selector=f"involvedObject.name={window}"
    )
    return [event.reason for event in events.items]


def firing(name: str) -> dict[str, object]:
    return {
        "status": "success",
        "data": {
            "alerts": [
                {
                    "labels": {"alertname": name},
                    "state": "firing",
                    "activeAt": "2026-11-22T00:00:00Z",
                }
            ]
        },
    }


NO_ALERTS = {"status": "success", "data": {"alerts": []}}


def test_prometheus_alert_blocks_the_window_until_it_clears(env: PitstopEnv) -> None:
    nodes = env.add_nodes(1, zones=1)
    env.flag(nodes)
    with loopback_server(Reply.json(firing("EtcdDown"))) as prometheus:
        window = env.window(
            "alerts", {**QUICK, "blockers": {"prometheus": {"url": prometheus.url}}}
        )
        with env.hosts() as hosts:
            brain = env.start_brain()
            blocked = env.wait_condition(window, "Blocked", "True", 60)
            assert "EtcdDown" in blocked["message"]
            values = wait_for_metric(
                env,
                brain.metrics_port,
                1.0,
                "pitstop_window_blocked",
                window=window,
                reason="PrometheusAlerts",
            )
            assert metric(values, "pitstop_window_open", window=window) == 1.0
            time.sleep(2)
            assert env.lock().get("nodes", {}) == {} and hosts.reboots == []
            # An unreachable or broken Prometheus blocks too: never read as "no alerts".
            prometheus.reply = Reply(status=500, body=b"oops")
            env.wait(
                lambda: "cannot reach" in env.condition(window, "Blocked").get("message", ""),
                "blocked on an unreachable Prometheus",
                60,
            )
            prometheus.reply = Reply.json(NO_ALERTS)
            env.wait(
                lambda: len(hosts.reboots) == 1 and not env.lock().get("nodes"),
                "the node to go once the alert cleared",
                60,
            )
        assert env.condition(window, "Blocked")["status"] == "False"
        assert {"Blocked", "Unblocked"} <= set(window_events(env, window))


def test_a_blocking_pod_holds_the_window(env: PitstopEnv) -> None:
    nodes = env.add_nodes(1, zones=1)
    env.flag(nodes)
    blocking_namespace = create_namespace(env.api, "blocker")
    try:
        create_bare_pod(env.api, blocking_namespace, "backup-job", nodes[0])
        env.core.patch_namespaced_pod(
            "backup-job",
            blocking_namespace,
            {"metadata": {"labels": {"pitstop-test/blocks": env.run}}},
        )
        window = env.window(
            "pods",
            {
                **QUICK,
                "blockers": {
                    "pods": [{"labelSelector": {"matchLabels": {"pitstop-test/blocks": env.run}}}]
                },
            },
        )
        with env.hosts() as hosts:
            env.start_brain()
            blocked = env.wait_condition(window, "Blocked", "True", 60)
            assert "backup-job" in blocked["message"]
            time.sleep(2)
            assert hosts.reboots == []
            env.core.delete_namespaced_pod("backup-job", blocking_namespace, grace_period_seconds=0)
            env.wait(
                lambda: len(hosts.reboots) == 1 and not env.lock().get("nodes"),
                "the node to go once the pod is gone",
                60,
            )
    finally:
        delete_namespace(env.api, blocking_namespace)


def test_hooks_gate_the_drain_and_the_hand_off(env: PitstopEnv) -> None:
    nodes = env.add_nodes(1, zones=1)
    env.flag(nodes)
    with loopback_server(Reply(status=503)) as pre_drain, loopback_server(Reply()) as post:
        window = env.window(
            "hooks",
            {
                **QUICK,
                "hooks": {
                    "preDrain": {"url": pre_drain.url + "/pre", "timeout": "2s", "retries": 5},
                    "postReboot": {"url": post.url + "/post", "timeout": "2s"},
                },
            },
        )
        with env.hosts() as hosts:
            env.start_brain()
            # Wait for a refused call, not the first "calling" message: the reply is switched
            # below, and a switch while the first call was under way let it succeed at once.
            waiting = env.wait(
                lambda: (
                    "failed" in env.lock().get("nodes", {}).get(nodes[0], {}).get("message", "")
                    and env.lock()["nodes"][nodes[0]]
                ),
                "the hook's first refusal",
                60,
            )
            assert "preDrain" in waiting["message"]
            assert waiting["phase"] == "Draining"
            assert not env.node(nodes[0]).spec.unschedulable, "cordoned before the hook said yes"
            pre_drain.reply = Reply()
            env.wait(
                lambda: len(hosts.reboots) == 1 and not env.lock().get("nodes"),
                "the reboot after the hook said yes",
                90,
            )
        first, last = pre_drain.requests[0].json(), post.requests[-1].json()
        assert first["node"] == nodes[0] and first["window"] == window
        assert first["hook"] == "preDrain" and first["bootID"]
        assert last["hook"] == "postReboot" and last["bootID"] == hosts.reboots[0].boot_id_after
        assert len(pre_drain.requests) >= 2


def test_notifications_reach_an_apprise_url(env: PitstopEnv) -> None:
    nodes = env.add_nodes(1, zones=1)
    env.flag(nodes)
    with loopback_server(Reply()) as receiver:
        url = f"json://127.0.0.1:{receiver.port}/notify"
        env.core.create_namespaced_secret(
            env.namespace,
            {
                "metadata": {"name": "notify"},
                "data": {"urls": base64.b64encode(url.encode()).decode()},
            },
        )
        window = env.window(
            "notify",
            {
                **QUICK,
                "notify": {"secretRef": {"name": "notify"}, "events": ["Started", "Succeeded"]},
            },
        )
        with env.hosts():
            env.start_brain()
            requests = receiver.wait_for_requests(2, timeout=60)
    bodies = [request.json() for request in requests]
    texts = [f"{body.get('title', '')} {body.get('message', '')}" for body in bodies]
    assert any("Started" in text and nodes[0] in text and window in text for text in texts)
    assert any("Succeeded" in text and nodes[0] in text for text in texts), texts


def test_metrics_follow_a_rollout(env: PitstopEnv) -> None:
    nodes = env.add_nodes(2, zones=1)
    env.flag(nodes)
    window = env.window("metrics", QUICK)
    seen_in_maintenance: set[float] = set()
    with env.hosts(default=HostBehaviour(delay_seconds=1.5)) as hosts:
        brain = env.start_brain()
        env.wait(
            lambda: (
                metric(scrape(brain.metrics_port), "kured_reboot_required", node=nodes[0])
                is not None
            ),
            "the first scrape",
            60,
        )
        before = scrape(brain.metrics_port)
        assert metric(before, "kured_reboot_required", node=nodes[0]) == 1.0
        assert metric(before, "pitstop_node_reboot_required", node=nodes[1]) == 1.0
        deadline = time.monotonic() + 90
        while (len(hosts.reboots) < 2 or env.lock().get("nodes")) and time.monotonic() < deadline:
            value = metric(
                scrape(brain.metrics_port), "pitstop_nodes_in_maintenance", window=window
            )
            if value is not None:
                seen_in_maintenance.add(value)
            time.sleep(0.1)
        after = wait_for_metric(
            env,
            brain.metrics_port,
            2.0,
            "pitstop_reboots_total",
            window=window,
            result="succeeded",
        )
    assert seen_in_maintenance >= {1.0}
    assert max(seen_in_maintenance) == 1.0
    assert metric(after, "kured_reboot_required", node=nodes[0]) == 0.0
    assert metric(after, "pitstop_nodes_in_maintenance", window=window) == 0.0
    assert (metric(after, "pitstop_phase_duration_seconds_count", phase="drain") or 0) >= 2
    assert (metric(after, "pitstop_phase_duration_seconds_count", phase="node_return") or 0) >= 2


def test_node_annotation_blocker_and_kured_in_progress_annotation(env: PitstopEnv) -> None:
    nodes = env.add_nodes(2, zones=1)
    hold = "example.com/hold-reboots"
    env.core.patch_node(nodes[1], {"metadata": {"annotations": {hold: "backup running"}}})
    env.flag(nodes)
    window = env.window("annotations", {**QUICK, "blockers": {"nodeAnnotations": [hold]}})
    seen_in_progress: set[str] = set()
    with env.hosts(default=HostBehaviour(delay_seconds=1.5)) as hosts:
        env.start_brain(extra_env={"PITSTOP_KURED_COMPATIBILITY": "true"})
        blocked = env.wait_condition(window, "Blocked", "True", 60)
        assert nodes[1] in blocked["message"] and hold in blocked["message"]
        time.sleep(2)
        assert hosts.reboots == []
        env.core.patch_node(nodes[1], {"metadata": {"annotations": {hold: None}}})
        deadline = time.monotonic() + 90
        while (len(hosts.reboots) < 2 or env.lock().get("nodes")) and time.monotonic() < deadline:
            for name in nodes:
                annotations = env.node(name).metadata.annotations or {}
                if annotations.get("weave.works/kured-reboot-in-progress"):
                    seen_in_progress.add(name)
            time.sleep(0.1)
    assert len(hosts.reboots) == 2
    assert seen_in_progress, "kured's in-progress annotation never showed"
    for name in nodes:
        assert "weave.works/kured-reboot-in-progress" not in (
            env.node(name).metadata.annotations or {}
        )
