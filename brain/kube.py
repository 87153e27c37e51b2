"""The brain's access to the Kubernetes API: the `kubernetes` client, run in threads.

The client is blocking; every call goes through `call()` so that the operator's event loop
never blocks, and every failed call is counted for the `pitstop_api_errors_total` metric.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from brain.core.clock import ClusterClock

T = TypeVar("T")
# Threads that run the brain's API calls (the event loop's default executor): the pool default
# (cores + 4) is too small once a few drains, hooks and blocker checks wait at once.
API_THREADS = 64
# Connections kept for reuse: one per API thread, plus the long-lived watches (the Node watch;
# a drain's pods and budgets, two per draining node). urllib3's default (10 on two cores)
# opened and dropped a connection for every call past the tenth ("Connection pool is full,
# discarding connection"); a larger pool costs nothing until its connections are used.
CONNECTION_POOL_SIZE = 4 * API_THREADS


def make_api_client(pool_size: int = CONNECTION_POOL_SIZE) -> client.ApiClient:
    """In a pod: the service account; elsewhere: $KUBECONFIG or ~/.kube/config."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


def sample_server_clock(api_client: client.ApiClient, clock: ClusterClock) -> None:
    """Every response through this client (errors, watches and drains included) tells `clock`
    the API server's time: its `Date` header, with when we sent and received it."""
    rest = api_client.rest_client
    request = rest.request

    def timed_request(*args: Any, **kwargs: Any) -> Any:
        sent = time.monotonic()
        try:
            response = request(*args, **kwargs)
        except ApiException as error:
            clock.observe_date_header(sent, time.monotonic(), _date_header(error.headers))
            raise
        clock.observe_date_header(sent, time.monotonic(), _date_header(response.headers))
        return response

    rest.request = timed_request


def _date_header(headers: Any) -> str | None:
    try:
        value = headers.get("Date") if headers is not None else None
    except AttributeError:
        return None
    return str(value) if value else None


class Kube:
    """Typed, thread-offloaded access to the API groups the brain uses."""

    def __init__(
        self, api_client: client.ApiClient, on_error: Callable[[ApiException], None] | None = None
    ) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.policy = client.PolicyV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self._on_error = on_error
        # Requests made through call(), by client method: the API cost, seen from our side.
        self.requests: dict[str, int] = {}

    async def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        name = getattr(function, "__name__", "call")
        self.requests[name] = self.requests.get(name, 0) + 1
        try:
            return await asyncio.to_thread(function, *args, **kwargs)
        except ApiException as error:
            # 404 and 409 are answers the flow expects, not API errors.
            if self._on_error is not None and error.status not in (404, 409):
                self._on_error(error)
            raise


def is_status(error: BaseException, *statuses: int) -> bool:
    return isinstance(error, ApiException) and error.status in statuses
