"""The brain's access to the Kubernetes API: JSON by path through the `kubernetes` client's
transport, run in threads.

Requests are made by path with JSON bodies and answers (`JsonApi`), never through the client's
generated API classes: importing `CoreV1Api` alone builds pydantic validators for its ~1,200
methods and the models they name (81 MiB of RSS and 2-3 s of CPU, more than the rest of the
brain), and turning answers into models and back costs CPU at scale. The client still does what
it is good at: configuration (in-cluster or kubeconfig), authentication, TLS, the pool.

Every request of the brain goes through one ApiClient, and `ApiRequests` wraps that client's
transport (its rest client's `request`) once: every request, whichever module makes it (the
flow, the drain's evictions and watches, the reboot Job, the blockers, the health gate), is
counted by verb, resource and code, timed, counted as an API error when it failed, and its
`Date` header tells the cluster clock the API server's time. `Kube`'s async forms run each
request in a thread so that the operator's event loop never blocks.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Final

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from brain.core.api import NO_ANSWER, ApiRequest, describe_request
from brain.core.clock import ClusterClock

# Patch bodies: a list is a JSON patch (RFC 6902); an object is a strategic merge patch for the
# built-in kinds and a merge patch (RFC 7386) for custom resources, which have no strategy.
JSON_PATCH: Final = "application/json-patch+json"
MERGE_PATCH: Final = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"
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


class JsonApi:
    """Requests by path, with JSON bodies and answers (dicts), on an ApiClient's transport.

    Blocking: the brain runs these in threads (`Kube` does it for the event loop's callers). A
    failed request raises the client's `ApiException` (with `status`, `headers` and `body`), as
    the generated classes did, so callers tell 404, 409, 410, 422 and 429 apart the same way.
    """

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client

    def send(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: float | tuple[float, float] | None = None,
    ) -> Any:
        """Send one request; returns the transport's response, not yet read (a watch streams
        from it). An answer other than 2xx is read and raised."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        method, url, headers, serialized, post = self.api_client.param_serialize(
            method,
            path,
            query_params=[
                (key, value) for key, value in (query or {}).items() if value is not None
            ],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(
            method,
            url,
            header_params=headers,
            body=serialized,
            post_params=post,
            _request_timeout=timeout,
        )
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException(http_resp=response)
        return response.response

    def _answer(self, method: str, path: str, **arguments: Any) -> Any:
        data = _body(self.send(method, path, **arguments))
        return json.loads(data) if data else {}

    def get_bytes(self, path: str, query: dict[str, Any] | None = None) -> bytes:
        """GET: the answer's JSON as it came, for a caller that decodes only part of it."""
        return _body(self.send("GET", path, query=query))

    def get(
        self,
        path: str,
        query: dict[str, Any] | None = None,
        timeout: float | tuple[float, float] | None = None,
    ) -> Any:
        """GET: an object, or a list (`items`, `metadata.continue`)."""
        return self._answer("GET", path, query=query, timeout=timeout)

    def create(self, path: str, body: Any, query: dict[str, Any] | None = None) -> Any:
        """POST `body` to a collection (or a subresource such as `pods/NAME/eviction`)."""
        return self._answer("POST", path, body=body, query=query)

    def replace(self, path: str, body: Any) -> Any:
        """PUT: the whole object, on the resourceVersion its metadata carries (409 if stale)."""
        return self._answer("PUT", path, body=body)

    def patch(self, path: str, body: Any, content_type: str | None = None) -> Any:
        """PATCH: a list is a JSON patch, an object a strategic merge patch (built-in kinds);
        custom resources need `MERGE_PATCH`."""
        if content_type is None:
            content_type = JSON_PATCH if isinstance(body, list) else STRATEGIC_MERGE_PATCH
        return self._answer("PATCH", path, body=body, content_type=content_type)

    def delete(self, path: str, body: Any = None) -> Any:
        """DELETE, with DeleteOptions (`propagationPolicy`, `preconditions`) as the body."""
        return self._answer("DELETE", path, body=body)


def _body(response: Any) -> bytes:
    """A whole answer's body; its connection goes back to the pool."""
    try:
        return bytes(response.data or b"")
    finally:
        response.release_conn()


def node_path(name: str) -> str:
    return f"/api/v1/nodes/{name}"


def list_pages(
    api: JsonApi, path: str, query: dict[str, Any] | None = None, page_size: int = 500
) -> Iterator[list[dict[str, Any]]]:
    """The objects of a list, a page at a time (`limit`, `continue`), so that no one answer
    (and no one moment of the brain's memory) holds thousands of whole objects."""
    token = ""
    while True:
        page_query = {**(query or {}), "limit": page_size}
        if token:
            page_query["continue"] = token
        page = api.get(path, page_query)
        yield list(page.get("items") or ())
        token = (page.get("metadata") or {}).get("continue") or ""
        if not token:
            return


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
        self.json = JsonApi(api_client)

    @property
    def requests(self) -> dict[str, int]:
        """Every request of the client so far, by "verb resource": the API cost, seen from
        our side (the drain's and the Job's included)."""
        return self._requests.counts

    async def get(self, path: str, query: dict[str, Any] | None = None) -> Any:
        return await asyncio.to_thread(self.json.get, path, query)

    async def create(self, path: str, body: Any, query: dict[str, Any] | None = None) -> Any:
        return await asyncio.to_thread(self.json.create, path, body, query)

    async def replace(self, path: str, body: Any) -> Any:
        return await asyncio.to_thread(self.json.replace, path, body)

    async def patch(self, path: str, body: Any, content_type: str | None = None) -> Any:
        return await asyncio.to_thread(self.json.patch, path, body, content_type)

    async def delete(self, path: str, body: Any = None) -> Any:
        return await asyncio.to_thread(self.json.delete, path, body)


def is_status(error: BaseException, *statuses: int) -> bool:
    return isinstance(error, ApiException) and error.status in statuses
