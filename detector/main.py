"""The `pitstop-detector` entry point: settings, then three small threads and a signal wait."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence

from detector import kube
from detector.metrics import Status, serve
from detector.reconciler import NodeWatcher, Reconciler, make_backoff
from detector.sentinel import SentinelWatcher
from detector.settings import EXIT_BAD_SETTINGS, Settings, SettingsError, load
from pitstop import logs

LOG = logging.getLogger("pitstop.detector")
EXIT_RUNTIME_FAILURE = 1


def endpoint_for(settings: Settings) -> kube.Endpoint:
    """A kubeconfig when one is named, otherwise the pod's service account."""
    if settings.kubeconfig:
        return kube.kubeconfig_endpoint(settings.kubeconfig)
    assert settings.in_cluster_host is not None  # guaranteed by validation
    return kube.in_cluster_endpoint(
        settings.in_cluster_host, settings.in_cluster_port, settings.service_account_dir
    )


def first_contact_problem(client: kube.NodeClient, endpoint: kube.Endpoint) -> str | None:
    """Read our Node once at start: an unreachable API server or a denied request is a setup
    problem a person fixes (the pod restarts and tries again), said in one line. Later outages
    are retried with backoff instead; a missing Node is reported when it appears."""
    try:
        client.get_node()
    except kube.ApiError as error:
        if error.status == 0:
            return (
                f"cannot reach the API server at {endpoint.scheme}://{endpoint.host}:"
                f"{endpoint.port}: {str(error).removeprefix('no answer: ')}"
            )
        if error.status == 401:
            return f"the API server rejected the credentials (401 Unauthorized): {error}"
        if error.status == 403:
            return f"permission denied (403 Forbidden): {error}"
    return None


def _complain(message: str) -> None:
    for line in message.splitlines():
        print(f"pitstop-detector: {line}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load(argv)
    except SettingsError as error:
        _complain(str(error))
        return EXIT_BAD_SETTINGS
    logs.configure(
        settings.log_level, settings.log_format, sys.stderr, fields={"node": settings.node_name}
    )
    try:
        endpoint = endpoint_for(settings)
    except kube.ConfigError as error:
        setting = (
            "--kubeconfig (environment variable KUBECONFIG)"
            if settings.kubeconfig
            else "--service-account-dir (environment variable PITSTOP_SERVICE_ACCOUNT_DIR)"
        )
        _complain(f"invalid setting {setting}: {error}")
        return EXIT_BAD_SETTINGS

    # Block the stop signals before any thread starts (threads inherit the mask), then take
    # them synchronously in this thread: no handler runs in the middle of a lock.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)

    status = Status(settings.stale_after_seconds)
    if settings.metrics_port:
        try:
            serve(status, settings.metrics_address, settings.metrics_port)
        except OSError as error:
            print(
                f"pitstop-detector: cannot listen on --metrics-port {settings.metrics_port} "
                f"(PITSTOP_METRICS_PORT): {error}",
                file=sys.stderr,
            )
            return EXIT_RUNTIME_FAILURE

    client = kube.NodeClient(endpoint, settings.node_name, settings.api_timeout_seconds)
    problem = first_contact_problem(client, endpoint)
    if problem is not None:
        _complain(problem)
        return EXIT_RUNTIME_FAILURE
    reconciler = Reconciler(
        client,
        status,
        settings.kured_compatibility,
        make_backoff(settings.backoff_initial_seconds, settings.backoff_max_seconds),
    )
    node_watcher = NodeWatcher(
        client,
        reconciler.node_observed,
        status,
        make_backoff(settings.backoff_initial_seconds, settings.backoff_max_seconds),
    )
    sentinel_watcher = SentinelWatcher(
        settings.sentinel_path, settings.poll_interval_seconds, reconciler.sentinel_changed
    )
    LOG.info(
        "detector for node %s watching %s (API %s://%s:%s)",
        settings.node_name,
        settings.sentinel_path,
        endpoint.scheme,
        endpoint.host,
        endpoint.port,
    )
    worker = threading.Thread(target=reconciler.run, name="reconciler", daemon=True)
    worker.start()
    node_watcher.start()
    sentinel_watcher.start()

    received = signal.sigwait(stop_signals)
    LOG.info("received %s; stopping", signal.Signals(received).name)
    # The report stays on the Node: a stopped detector does not mean the reboot is done.
    reconciler.stop()
    node_watcher.stop()
    worker.join(timeout=1.0)
    logging.shutdown()
    return 0
