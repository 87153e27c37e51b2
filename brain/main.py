"""The brain's process: kopf wiring only. Handlers stay thin and call the reconciler.

- Nodes: not kopf's. One lean watch (brain/node_watch.py) keeps a small NodeView per Node and
  wakes the window tasks only when a view changed; nothing is ever written to Nodes from a
  handler (no finalizers, no progress annotations on Nodes).
- Windows: an index of their specs, and one daemon per window that runs a reconcile pass
  whenever it is woken (a node or window changed, a step finished) or every resync period;
  wake-ups that come in a burst make one pass.
- Startup: kopf's own settings (prefixes under pitstop.dev, standalone, no kopf Events), the
  shared Brain object (in kopf's `memo`, which every handler gets), and one task that finishes
  nodes whose window was deleted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from brain.cluster_failures import run_command
from brain.core.api import GROUP, PLURAL, VERSION
from brain.core.clock import ClusterClock
from brain.core.node_view import NodeView
from brain.events import EventRecorder
from brain.flow import NodeFlow
from brain.integrations.metrics import BrainMetrics, MetricsServer, start_metrics_server
from brain.integrations.observer import BrainObserver
from brain.integrations.window_blockers import BlockerChecker
from brain.kube import API_THREADS, ApiRequests, Kube, make_api_client
from brain.lock import LockStore
from brain.lock_rebuild import LockRebuilder
from brain.node_watch import NodeWatch
from brain.preflight import check_cluster
from brain.reboot.job_check import RebootJobCheck
from brain.reconciler import WindowEntry, WindowReconciler
from brain.settings import BrainSettings, SettingsError, load_settings
from brain.status_writer import StatusWriter
from pitstop import contract, logs

log = logging.getLogger("pitstop.brain")
# A pass starts this long after its first wake-up, so a burst of changes (a zone flagged at once,
# nodes moving together) makes one pass instead of one per change.
COALESCE_SECONDS = 0.05


class Brain:
    """What every handler of this process shares."""

    def __init__(self, settings: BrainSettings) -> None:
        self.settings = settings
        self.metrics = BrainMetrics()
        # Every request of the brain's one client is counted and timed in the metrics, and its
        # response sets the clock to the API server's time.
        self.clock = ClusterClock(settings.clock_skew_warning_seconds)
        requests = ApiRequests(self.clock, observe=self.metrics.observe_api_request)
        self.kube = Kube(make_api_client(requests))
        self.events = EventRecorder(
            self.kube, host=socket.gethostname(), clock_ns=self.clock.time_ns
        )
        self.status_writer = StatusWriter(
            self.kube, settings.namespace, on_change=self._status_writer_changed, now=self.clock.now
        )
        # Read at each scrape: the hold is asked for on demand and lapses without a request.
        self.metrics.status_writer.set_function(
            lambda: 1.0 if self.status_writer.is_writer else 0.0
        )
        self.lock = LockStore(
            self.kube,
            settings.namespace,
            settings.lock_name,
            on_conflict=self.metrics.lock_conflicts.inc,
            # A deleted lock is rebuilt from the nodes' marks and the reboot Jobs.
            rebuild=LockRebuilder(
                self.kube,
                self.events,
                settings.job_namespace,
                f"{settings.namespace}/{settings.lock_name}",
                now=self.clock.now,
            ),
        )
        self.observer = BrainObserver(
            self.kube,
            settings.namespace,
            self.metrics,
            now=self.clock.now,
            cluster_name=settings.cluster_name,
        )
        self._wakers: dict[str, asyncio.Event] = {}
        self.flow = NodeFlow(
            self.kube,
            self.lock,
            settings,
            self.events,
            wake=self.wake_later,
            observer=self.observer,
            clock=self.clock,
        )
        self.reconciler = WindowReconciler(
            self.kube,
            self.lock,
            self.flow,
            self.events,
            check_blockers=BlockerChecker(
                self.kube.api_client, on_result=self.observer.blocker_result
            ),
            on_plan=self.observer.plan,
            on_window_event=self.observer.window_event,
            prepare_window=self.observer.prepare,
            check_reboot_job=RebootJobCheck(self.kube, settings),
            clock=self.clock,
            status_writer=self.status_writer,
        )
        self.metrics_server: MetricsServer | None = None
        self.last_housekeeping = time.monotonic()
        self.node_watch = NodeWatch(self.kube.api_client, on_change=self.wake_all)
        self.window_index: Any = None
        self.housekeeping: asyncio.Task[None] | None = None

    def _status_writer_changed(self, writer: bool) -> None:
        if writer:
            self.wake_all()  # write every window's status as this brain sees it

    # Wake-ups: every window task has an Event; a change anywhere sets them all.
    def waker(self, name: str) -> asyncio.Event:
        return self._wakers.setdefault(name, asyncio.Event())

    def wake_all(self) -> None:
        for event in self._wakers.values():
            event.set()

    def wake_later(self, seconds: float) -> None:
        if seconds <= 0:
            self.wake_all()
        else:
            asyncio.get_running_loop().call_later(seconds, self.wake_all)

    def nodes(self) -> list[NodeView]:
        return self.node_watch.nodes()

    def windows(self) -> dict[str, WindowEntry]:
        return {name: entry for name, store in (self.window_index or {}).items() for entry in store}

    async def run_window(self, name: str, stopped: Any) -> None:
        waker = self.waker(name)
        logs.current_window.set(name)  # every line of this window's passes names it
        try:
            # Nothing is planned from an empty node set: the first list of Nodes comes first.
            await self.node_watch.synced.wait()
            while not stopped:
                await asyncio.sleep(COALESCE_SECONDS)
                waker.clear()
                try:
                    await self.reconciler.reconcile(name, self.windows(), self.nodes())
                except Exception:
                    log.exception("reconcile pass of window %s failed", name)
                    await asyncio.sleep(1)
                with _suppress_timeout():
                    await asyncio.wait_for(waker.wait(), timeout=self.settings.resync_seconds)
        finally:
            self._wakers.pop(name, None)

    async def run_housekeeping(self) -> None:
        waker = self.waker("")
        await self.node_watch.synced.wait()
        while True:
            await asyncio.sleep(COALESCE_SECONDS)
            waker.clear()
            try:
                if self.window_index is not None:
                    await self.reconciler.reconcile_orphans(self.windows(), self.nodes())
                self.last_housekeeping = time.monotonic()
                self.metrics.clock_skew.set(self.clock.skew_seconds())
            except Exception:
                log.exception("housekeeping pass failed")
            with _suppress_timeout():
                await asyncio.wait_for(waker.wait(), timeout=self.settings.resync_seconds)

    def healthy(self) -> bool:
        """Alive while the housekeeping loop keeps turning (it runs at least every resync)."""
        return time.monotonic() - self.last_housekeeping < 3 * self.settings.resync_seconds + 30

    async def close(self) -> None:
        log.info(
            "API requests of the brain's client, by verb and resource: %s",
            dict(sorted(self.kube.requests.items())),
        )
        if self.housekeeping is not None:
            self.housekeeping.cancel()
        await self.status_writer.release()  # the other brain takes over at once
        await self.node_watch.stop()
        await self.reconciler.close()  # taint writes still queued are dropped, not half-sent
        await self.flow.close()
        await self.flow.hooks.close()
        self.observer.close()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.kube.api_client.close()


class _suppress_timeout:  # noqa: N801 - reads like contextlib.suppress
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is TimeoutError


def _brain(memo: Any) -> Brain:
    """The process's Brain, which main() puts in kopf's memo (every handler gets the memo)."""
    brain = getattr(memo, "brain", None)
    if not isinstance(brain, Brain):
        raise RuntimeError("the brain is not started")
    return brain


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    settings.persistence.finalizer = f"{contract.DOMAIN}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=contract.DOMAIN)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=contract.DOMAIN, key=f"{contract.DOMAIN}/last-handled-configuration"
    )
    settings.posting.enabled = False
    settings.peering.standalone = True
    settings.watching.server_timeout = 300
    brain = _brain(memo)
    # Every API call runs in a thread (a full pool would stall every pass); the client's
    # connection pool has as many connections (brain/kube.py).
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=API_THREADS, thread_name_prefix="pitstop-api")
    )
    brain.window_index = kwargs["window_entries"]
    brain.node_watch.start()
    brain.housekeeping = asyncio.create_task(brain.run_housekeeping(), name="housekeeping")
    if brain.settings.metrics_port:
        brain.metrics_server = start_metrics_server(
            brain.settings.metrics_port, brain.metrics, health_check=brain.healthy
        )
        log.info("metrics and /healthz on port %d", brain.metrics_server.port)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    await _brain(memo).close()


@kopf.index(GROUP, VERSION, PLURAL)
def window_entries(name: str, body: Mapping[str, Any], **_: Any) -> dict[str, WindowEntry]:
    return {name: WindowEntry.from_body(body)}


@kopf.on.event(GROUP, VERSION, PLURAL)
def window_changed(memo: kopf.Memo, **_: Any) -> None:
    _brain(memo).wake_all()


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10)
async def window_daemon(name: str, stopped: Any, memo: kopf.Memo, **_: Any) -> None:
    await _brain(memo).run_window(name, stopped)


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv)
    except SettingsError as error:
        print(f"pitstop-brain: {error}", file=sys.stderr)
        return 2
    # One handler for our records and kopf's (kopf.run configures no logging of its own).
    logs.configure(settings.log_level, settings.log_format, sys.stdout)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    # kopf logs every handler call at INFO; our own log lines say what happened.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)

    def preflight() -> int:
        warning = check_cluster(settings)
        if warning:
            print(f"pitstop-brain: {warning}", file=sys.stderr, flush=True)
        return 0

    exit_code = run_command("pitstop-brain", preflight)
    if exit_code:
        return exit_code
    brain = Brain(settings)
    os.environ.setdefault("KOPF_STANDALONE", "1")
    kopf.run(
        clusterwide=True,
        standalone=True,
        registry=kopf.get_default_registry(),
        memo=kopf.Memo(brain=brain),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
