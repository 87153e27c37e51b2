"""A brain on a host whose clock is wrong, and two brains: deadlines by the API server's clock,
one status writer (issue 22).

The skewed brain runs under libfaketime (Debian's `faketime` package): its wall clock is ten
minutes ahead or behind, its monotonic clock is not faked, as on a host whose NTP is broken.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from localcluster.hosts import HostBehaviour
from localcluster.observe import LockObserver
from tests.integration.pitstop_env import PitstopEnv
from tests.integration.test_brain_integrations import metric, scrape

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
RETURN_TIMEOUT_SECONDS = 25
# How late (by the test's own clock) a node may be failed after its deadline: the Date header's
# second, a pass's pace, a loaded machine. Never early.
LATE_TOLERANCE_SECONDS = 6.0
EARLY_TOLERANCE_SECONDS = 1.0
LEASE_SECONDS = 15.0
RENEW_SECONDS = 5.0


@pytest.fixture(scope="module", autouse=True)
def libfaketime() -> Path:
    """Debian's faketime, installed with apt-get where missing (the test machines run as root):
    a fresh machine runs this test too instead of skipping it."""
    if not LIBFAKETIME.exists() or not shutil.which("faketime"):
        if not shutil.which("apt-get") or os.geteuid() != 0:
            pytest.skip("needs libfaketime (apt-get install faketime) and no root apt-get here")
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "faketime"],
        ):
            result = subprocess.run(
                command, env=environment, capture_output=True, text=True, timeout=900, check=False
            )
            assert result.returncode == 0, f"{' '.join(command)}: {result.stdout}{result.stderr}"
    assert LIBFAKETIME.exists(), f"faketime installed but {LIBFAKETIME} is missing"
    return LIBFAKETIME


def skewed_clock(env: PitstopEnv, offset: str, folder: Path) -> dict[str, str]:
    """The environment of a brain whose wall clock is `offset` off (e.g. "+10m").

    A clock behind would find the local cluster's certificates (issued minutes ago) not yet
    valid and refuse every TLS handshake, which is not what this test is about: that brain's
    kubeconfig skips server certificate checks (same token, same user)."""
    kubeconfig = yaml.safe_load(env.plane.user_kubeconfig("pitstop-brain").read_text())
    for entry in kubeconfig["clusters"]:
        entry["cluster"].pop("certificate-authority-data", None)
        entry["cluster"]["insecure-skip-tls-verify"] = True
    path = folder / f"kubeconfig-skewed{offset}"
    path.write_text(json.dumps(kubeconfig))
    return {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_NO_CACHE": "1",
        "KUBECONFIG": str(path),
        "PYTHONWARNINGS": "ignore:Unverified HTTPS request",
    }


def window_events(env: PitstopEnv, window: str) -> list[Any]:
    return [
        event
        for event in env.core.list_namespaced_event("default").items
        if event.involved_object.name == window
    ]


def first_moment(observer: LockObserver, node: str, phase: str) -> float | None:
    """When (the test's monotonic clock) the lock first showed `node` in `phase`."""
    for snapshot in list(observer.snapshots):
        if (snapshot.leases.get(node) or {}).get("phase") == phase:
            return snapshot.at
    return None


# A brain 10 minutes ahead joins a rollout a normal brain started (on its own clock it would
# judge the normal brain's deadlines passed at once); a brain 10 minutes behind starts one that
# a normal brain joins (on its own clock it would write deadlines the normal brain finds passed,
# and judge the normal brain's 10 minutes late).
@pytest.mark.parametrize(("offset", "skewed_first"), [("+10m", False), ("-10m", True)])
def test_a_brain_with_a_skewed_clock_fails_no_node_early_or_late_and_flaps_nothing(
    env: PitstopEnv, offset: str, skewed_first: bool, tmp_path: Path
) -> None:
    # Three nodes in flight; the first never comes back (it must fail at its deadline, not
    # before and not much after), the two others reboot slowly (they must not fail at all);
    # the fourth takes the first freed slot.
    nodes = env.add_nodes(4, zones=1)
    lost, slow, rest = nodes[0], nodes[1:3], nodes[1:]
    env.flag(nodes)
    window = env.window(
        "skew",
        {
            "maxUnavailable": 3,
            "drain": {"timeout": "30s"},
            "reboot": {"nodeReturnTimeout": f"{RETURN_TIMEOUT_SECONDS}s"},
        },
    )
    behaviours = {
        lost: HostBehaviour(never_returns=True),
        **{name: HostBehaviour(delay_seconds=2.0, down_seconds=8.0) for name in slow},
    }
    degraded_seen: list[str] = []
    with env.observer() as observer, env.hosts(behaviours=behaviours) as hosts:
        if skewed_first:
            skewed = env.start_brain(extra_env=skewed_clock(env, offset, tmp_path))
        else:
            env.start_brain()
        env.wait(lambda: len(env.lock().get("nodes", {})) == 3, "three nodes in maintenance", 60)
        if skewed_first:
            env.start_brain()
        else:
            skewed = env.start_brain(extra_env=skewed_clock(env, offset, tmp_path))

        def settled() -> bool:
            degraded_seen.append(env.condition(window, "Degraded").get("status", ""))
            lock_nodes = env.lock().get("nodes", {})
            return (
                len(hosts.reboots) == len(rest)
                and set(lock_nodes) == {lost}
                and lock_nodes[lost]["phase"] == "Failed"
            )

        env.wait(
            settled,
            "the slow nodes done and the lost node failed",
            120,
            explain=lambda: "\n".join(
                f"{snapshot.at:.1f} {json.dumps(snapshot.leases)} {json.dumps(snapshot.windows)}"
                for snapshot in observer.snapshots
            ),
        )
        # The skewed brain is told: one log line, the metric, one Event per window.
        env.wait(
            lambda: (
                abs(metric(scrape(skewed.metrics_port), "pitstop_clock_skew_seconds") or 0) > 500
            ),
            "the skew metric",
            30,
        )
        time.sleep(3)  # time for a flap to show, were there one
        degraded_seen.append(env.condition(window, "Degraded").get("status", ""))

    # No node failed early: the slow ones were rebooted and finished, never Failed.
    failed_ever = {
        name
        for snapshot in observer.snapshots
        for name, lease in snapshot.leases.items()
        if lease.get("phase") == "Failed"
    }
    assert failed_ever == {lost}, f"failed while rebooting normally: {failed_ever - {lost}}"
    results = {
        entry["node"]: entry["result"] for entry in env.lock()["windows"][window]["completed"]
    }
    assert results == dict.fromkeys(rest, "Rebooted")
    # The lost node failed at the deadline written in the lock, by this machine's clock (the
    # API server's: same host), not before and not much after. The WaitingForNode phase lasted
    # about nodeReturnTimeout (less the time between a pass's start and its write).
    waiting = first_moment(observer, lost, "WaitingForNode")
    failed = first_moment(observer, lost, "Failed")
    assert waiting is not None and failed is not None
    took = failed - waiting
    deadline = next(
        datetime.fromisoformat(str(snapshot.leases[lost]["deadline"]).replace("Z", "+00:00"))
        for snapshot in reversed(observer.snapshots)
        if (snapshot.leases.get(lost) or {}).get("phase") == "WaitingForNode"
    )
    failed_at = datetime.fromtimestamp(time.time() - (time.monotonic() - failed), UTC)
    after = (failed_at - deadline).total_seconds()
    assert after >= -EARLY_TOLERANCE_SECONDS, f"failed {-after:.1f} s before its deadline"
    assert after <= LATE_TOLERANCE_SECONDS, f"failed {after:.1f} s after its deadline"
    assert took >= RETURN_TIMEOUT_SECONDS - 3, f"deadline {took:.1f} s after the phase began"
    # No budget violation, nobody rebooted twice.
    assert observer.peak() <= 3
    assert sorted(record.node for record in hosts.reboots) == sorted(rest)
    # No flapping: the window went Degraded once (the lost node) and never Recovered.
    events = window_events(env, window)
    reasons = [event.reason for event in events]
    assert reasons.count("Degraded") == 1, reasons
    assert reasons.count("Recovered") == 0, reasons
    transitions = [
        status
        for index, status in enumerate(degraded_seen)
        if index == 0 or status != degraded_seen[index - 1]
    ]
    assert transitions in (["True"], ["False", "True"], ["", "True"], ["", "False", "True"]), (
        transitions
    )
    assert reasons.count("ClockSkew") == 1, reasons
    # No Event from the future (nor ten minutes in the past): every one is in the server's time.
    now = datetime.now(UTC)
    for event in events + [
        event
        for event in env.core.list_namespaced_event("default").items
        if event.involved_object.name in nodes
    ]:
        stamp = event.event_time or event.last_timestamp
        assert abs((now - stamp).total_seconds()) < 300, (event.reason, stamp)
    log = skewed.log_path.read_text()
    assert log.count("WARNING pitstop.clock: this host's clock is") == 1
    print(
        f"\nskewed brain ({offset}): lost node failed {after:+.1f} s from its deadline, after "
        f"{took:.1f} s in WaitingForNode (nodeReturnTimeout {RETURN_TIMEOUT_SECONDS} s); "
        f"Failed nodes {sorted(failed_ever)}; "
        f"window Events {sorted(reasons)}; peak in maintenance {observer.peak()}/3"
    )


def lease_holder(env: PitstopEnv) -> str:
    try:
        lease = client.CoordinationV1Api(env.api).read_namespaced_lease(
            "pitstop-status-writer", env.namespace
        )
    except client.exceptions.ApiException:
        return ""
    return str(lease.spec.holder_identity or "")


def lease_requests(port: int) -> float:
    """The brain's requests on Leases so far (its own count, by verb, resource and code)."""
    return sum(
        value
        for (name, labels), value in scrape(port).items()
        if name == "pitstop_api_requests_total" and ("resource", "leases") in labels
    )


def test_two_brains_have_one_status_writer_and_the_other_takes_over_when_it_dies(
    env: PitstopEnv,
) -> None:
    nodes = env.add_nodes(4, zones=2)
    env.flag(nodes[:2])
    window = env.window("writers", {"maxUnavailable": 1, "drain": {"timeout": "30s"}})
    brains = [env.start_brain(), env.start_brain()]
    writers_seen: list[list[int]] = []

    def writers() -> list[int]:
        flags = [
            metric(scrape(brain.metrics_port), "pitstop_status_writer") == 1 for brain in brains
        ]
        found = [index for index, flag in enumerate(flags) if flag]
        writers_seen.append(found)
        return found

    with env.hosts() as hosts:
        # The Lease is held on demand: 1 while a brain's hold is valid (it lapses when idle).
        env.wait(lambda: len(writers()) == 1, "one status writer", 60)
        env.wait(
            lambda: (writers() or True) and len(hosts.reboots) == 2 and not env.lock().get("nodes"),
            "two nodes rebooted",
            120,
        )
        env.wait(lambda: (writers() or True) and len(done_of(env, window)) == 2, "status", 30)
        holder = lease_holder(env)
        writer = next(
            index
            for index, brain in enumerate(brains)
            if holder == f"pitstop-brain-{brain.log_path.stem}"
        )
        other = 1 - writer
        # Idle: nothing to write, so neither brain sends a Lease request (no renewal on a
        # timer), and the holder's hold lapses.
        env.wait(lambda: not writers(), "the idle holder's hold to lapse", LEASE_SECONDS + 5)
        idle_from = [lease_requests(brain.metrics_port) for brain in brains]
        time.sleep(2 * RENEW_SECONDS)
        assert [lease_requests(brain.metrics_port) for brain in brains] == idle_from
        assert lease_holder(env) == holder
        # The writer dies (SIGKILL: no clean hand-over). The other takes over once it has
        # status to write, within the lease duration (plus one read period) of wanting to.
        brains[writer].kill()
        env.brains.remove(brains[writer])
        env.flag(nodes[2:])
        flagged = time.monotonic()
        env.wait(
            lambda: metric(scrape(brains[other].metrics_port), "pitstop_status_writer") == 1,
            "the other brain to write status",
            LEASE_SECONDS + 2 * RENEW_SECONDS + 5,
        )
        took_over = time.monotonic() - flagged
        assert took_over <= LEASE_SECONDS + 2 * RENEW_SECONDS + 2
        assert lease_holder(env) == f"pitstop-brain-{brains[other].log_path.stem}"
        # The survivor writes the status of what happens next.
        env.wait(lambda: len(done_of(env, window)) == 4, "all four nodes Done in status", 120)
    assert all(len(found) <= 1 for found in writers_seen), "two status writers at once"
    reasons = [event.reason for event in window_events(env, window)]
    # Each condition Event once: two writers would each post their own.
    assert reasons.count("WindowOpened") == 1, reasons
    print(f"\nstatus writer take-over after SIGKILL, from the flag: {took_over:.1f} s")


def done_of(env: PitstopEnv, window: str) -> set[str]:
    status = env.get_window(window).get("status", {})
    return {entry["name"] for entry in status.get("nodes", []) if entry["phase"] == "Done"}
