"""The brain's access to the Kubernetes API: the `kubernetes` client, run in threads.

Every request of the brain goes through one ApiClient, and `ApiRequests` wraps that client's
transport (its rest client's `request`) once: every request, whichever module makes it (the
flow, the drain's evictions and watches, the reboot Job, the blockers, the health gate), is
counted by verb, resource and code, timed, counted as an API error when it failed, and its
`Date` header tells the cluster clock the API server's time. `Kube.call()` runs blocking
client calls in a thread so that the operator's event loop never blocks.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from brain.core.api import NO_ANSWER, ApiRequest, describe_request
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


# Where an ApiClient's rest client keeps the ApiRequests that wraps it (installed once).
_INSTALLED = "_pitstop_api_requests"


class ApiRequests:
    """The one wrapper around an ApiClient's transport: counts, times and observes requests.

    A streamed response (a watch) returns from the transport when its headers arrive, so a
    watch is counted once, when it opens, and timed to then.
    """

    def __init__(
        self,
        clock: ClusterClock | None = None,
        observe: Callable[[ApiRequest], None] | None = None,
    ) -> None:
        self._clock = clock
        self._observe = observe
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    @staticmethod
    def of(api_client: client.ApiClient) -> ApiRequests | None:
        """The wrapper installed on `api_client`, if any."""
        installed = getattr(api_client.rest_client, _INSTALLED, None)
        return installed if isinstance(installed, ApiRequests) else None

    def install(self, api_client: client.ApiClient) -> None:
        """Wrap `api_client`'s transport; a second wrapper would count every request twice."""
        rest = api_client.rest_client
        if ApiRequests.of(api_client) is not None:
            raise RuntimeError("this ApiClient's requests are already counted")
        request = rest.request

        def counted_request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            sent = time.monotonic()
            try:
                response = request(method, url, *args, **kwargs)
            except ApiException as error:  # the transport's own: a Retry-After, an SSL error
                self._record(method, url, str(error.status or NO_ANSWER), sent, error.headers)
                raise
            except Exception:
                self._record(method, url, NO_ANSWER, sent, None)
                raise
            self._record(method, url, str(response.status), sent, response.headers)
            return response

        rest.request = counted_request
        setattr(rest, _INSTALLED, self)

    @property
    def counts(self) -> dict[str, int]:
        """Requests so far by "verb resource" (e.g. "create pods/eviction"): the API cost."""
        with self._lock:
            return dict(self._counts)

    def _record(self, method: str, url: str, code: str, sent: float, headers: Any) -> None:
        received = time.monotonic()
        verb, resource = describe_request(method, url)
        with self._lock:
            self._counts[f"{verb} {resource}"] += 1
        if self._clock is not None and code != NO_ANSWER:
            self._clock.observe_date_header(sent, received, _date_header(headers))
        if self._observe is not None:
            self._observe(ApiRequest(verb, resource, code, received - sent))


def make_api_client(
    requests: ApiRequests | None = None, pool_size: int = CONNECTION_POOL_SIZE
) -> client.ApiClient:
    """In a pod: the service account; elsewhere: $KUBECONFIG or ~/.kube/config. With
    `requests`, every request of the client goes through it."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = pool_size
    api_client = client.ApiClient(configuration)
    if requests is not None:
        requests.install(api_client)
    return api_client


def _date_header(headers: Any) -> str | None:
    try:
        value = headers.get("Date") if headers is not None else None
    except AttributeError:
        return None
    return str(value) if value else None


class Kube:
    """Typed, thread-offloaded access to the API groups the brain uses."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        # Every request is counted at the transport (ApiRequests), installed here if not yet.
        installed = ApiRequests.of(api_client)
        if installed is None:
            installed = ApiRequests()
            installed.install(api_client)
        self._requests = installed
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.policy = client.PolicyV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.coordination = client.CoordinationV1Api(api_client)

    @property
    def requests(self) -> dict[str, int]:
        """Every request of the client so far, by "verb resource": the API cost, seen from
        our side (the drain's and the Job's included)."""
        return self._requests.counts

    async def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking client call in a thread (its request is counted at the transport)."""
        return await asyncio.to_thread(function, *args, **kwargs)


def is_status(error: BaseException, *statuses: int) -> bool:
    return isinstance(error, ApiException) and error.status in statuses
