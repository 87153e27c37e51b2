"""Stand-ins for the hosts behind kwok nodes: they "reboot" when their reboot Job appears.

A real host reboots when the reboot Job's pod runs on it. Here a watcher sees each new reboot
Job (labelled with the node it is for) and, after a configurable delay, plays the reboot with
`simulate_reboot`. Per-node behaviour can be changed: never come back, or come back with the
same boot ID (a reboot that did not happen).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client, watch

from localcluster.nodes import boot_id, simulate_reboot, take_node_down
from pitstop import contract

log = logging.getLogger("localcluster.hosts")
JOB_NODE_LABEL = contract.JOB_NODE_LABEL


def flag_node(api_client: client.ApiClient, node: str, since: str = "", reason: str = "") -> None:
    """What a detector writes when the node's sentinel file appears."""
    annotations = {contract.REBOOT_REQUIRED_SINCE_ANNOTATION: since or _now()}
    if reason:
        annotations[contract.REBOOT_REASON_ANNOTATION] = reason
    client.CoreV1Api(api_client).patch_node(
        node,
        {
            "metadata": {
                "labels": {contract.REBOOT_REQUIRED_LABEL: contract.REBOOT_REQUIRED_VALUE},
                "annotations": annotations,
            }
        },
    )


def unflag_node(api_client: client.ApiClient, node: str) -> None:
    """What a detector writes when the node's sentinel file goes away."""
    client.CoreV1Api(api_client).patch_node(
        node,
        {
            "metadata": {
                "labels": {contract.REBOOT_REQUIRED_LABEL: None},
                "annotations": {
                    contract.REBOOT_REQUIRED_SINCE_ANNOTATION: None,
                    contract.REBOOT_REASON_ANNOTATION: None,
                },
            }
        },
    )


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class HostBehaviour:
    delay_seconds: float = 0.5  # from Job creation to the node going down
    down_seconds: float = 1.0
    never_returns: bool = False
    same_boot_id: bool = False


@dataclass
class RebootRecord:
    node: str
    job: str
    started: float
    finished: float = 0.0
    boot_id_before: str = ""
    boot_id_after: str = ""


@dataclass
class HostSimulator:
    """Watches reboot Jobs in `namespace` and reboots their nodes; use as a context manager."""

    api_client: client.ApiClient
    namespace: str
    sentinels: dict[str, Path] = field(default_factory=dict)
    default: HostBehaviour = field(default_factory=HostBehaviour)
    behaviours: dict[str, HostBehaviour] = field(default_factory=dict)
    jitter_seconds: float = 0.0
    # Also play the detector: clear the node's reboot-required flag once it is back (tests of
    # the brain alone; with real detectors, deleting the sentinel file does this).
    unflag_on_reboot: bool = False
    on_reboot: Callable[[RebootRecord], None] | None = None
    reboots: list[RebootRecord] = field(default_factory=list)
    _seen_jobs: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> HostSimulator:
        watcher = threading.Thread(target=self._watch, name="host-simulator", daemon=True)
        watcher.start()
        self._threads.append(watcher)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def reboot_count(self, node: str) -> int:
        return sum(1 for record in self.reboots if record.node == node)

    def _watch(self) -> None:
        batch = client.BatchV1Api(self.api_client)
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    batch.list_namespaced_job, self.namespace, timeout_seconds=2
                ):
                    if self._stop.is_set():
                        break
                    job = event["object"]
                    name = job.metadata.name
                    if event["type"] != "ADDED" or name in self._seen_jobs:
                        continue
                    self._seen_jobs.add(name)
                    node = (job.metadata.labels or {}).get(JOB_NODE_LABEL) or (
                        job.spec.template.spec.node_name
                    )
                    if node:
                        thread = threading.Thread(
                            target=self._reboot, args=(node, name), daemon=True
                        )
                        thread.start()
                        self._threads.append(thread)
            except Exception as error:
                log.debug("job watch ended: %s", error)
                time.sleep(0.5)
            finally:
                stream.stop()

    def _reboot(self, node: str, job: str) -> None:
        behaviour = self.behaviours.get(node, self.default)
        record = RebootRecord(node=node, job=job, started=time.monotonic())
        for _ in range(50):  # the API may be briefly busy; a "same boot ID" host needs it
            try:
                record.boot_id_before = boot_id(self.api_client, node)
                break
            except Exception as error:
                log.warning("reading the boot ID of %s failed: %r", node, error)
                time.sleep(0.1)
        delay = behaviour.delay_seconds + random.uniform(0, self.jitter_seconds)
        if self._stop.wait(delay):
            return
        try:
            if behaviour.never_returns:
                take_node_down(self.api_client, node)
                return  # not a reboot: the host stays down
            else:
                record.boot_id_after = simulate_reboot(
                    self.api_client,
                    node,
                    down_seconds=behaviour.down_seconds,
                    sentinel=self.sentinels.get(node),
                    new_boot_id=record.boot_id_before if behaviour.same_boot_id else None,
                )
        except Exception as error:
            log.warning("simulated reboot of %s failed: %s", node, error)
            return
        if self.unflag_on_reboot and not behaviour.same_boot_id:
            unflag_node(self.api_client, node)
        record.finished = time.monotonic()
        self.reboots.append(record)
        if self.on_reboot is not None:
            self.on_reboot(record)
