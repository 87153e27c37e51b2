"""Pitstop's API in one place: the window resource's coordinates, the lock's defaults, and how
a request of the brain is named in its metrics (verb, resource, code).

Everything that names the NodesMaintenanceWindow API (the operator's handlers, the reconciler,
the CLI, the local cluster) imports it from here, so a version bump is one edit. Pure: naming a
request is parsing its URL, the same way the API server's own RequestInfo does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs, urlsplit

from pitstop.contract import DOMAIN

GROUP: Final = DOMAIN
VERSION: Final = "v1alpha1"
KIND: Final = "NodesMaintenanceWindow"
PLURAL: Final = "nodesmaintenancewindows"
SHORT_NAME: Final = "nmw"
API_VERSION: Final = f"{GROUP}/{VERSION}"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

# Where the brain lives and keeps its lock unless told otherwise (the chart's defaults too).
DEFAULT_NAMESPACE: Final = "pitstop-system"
DEFAULT_JOB_NAMESPACE: Final = "pitstop-reboot"
DEFAULT_LOCK_NAME: Final = "pitstop-lock"

# The `code` of a request that got no HTTP answer (refused connection, timeout): client-go's.
NO_ANSWER: Final = "<error>"
# Answers the brain expects and acts on, so not API errors: gone (404), a lost race decided
# again (409), an expired resourceVersion the watch resumes from (410).
EXPECTED_ANSWERS: Final = frozenset({"404", "409", "410"})
# 429 from an eviction is a disruption budget saying "not now": the drain waits for it.
EVICTION: Final = "pods/eviction"
# Subresources of a namespace (namespaces/NAME/status) rather than resources in it.
_NAMESPACE_SUBRESOURCES: Final = frozenset({"status", "finalize"})
_COLLECTION_VERBS: Final = {"GET": "list", "DELETE": "deletecollection"}
_VERBS: Final = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch"}


@dataclass(frozen=True)
class ApiRequest:
    """One request as the metrics see it: what was done to what, the answer, how long it took
    (to the response's headers: for a watch, until it was open)."""

    verb: str
    resource: str
    code: str
    seconds: float

    @property
    def failed(self) -> bool:
        """An API error: no answer, or an error the brain does not expect as part of its work."""
        if self.code == NO_ANSWER:
            return True
        if not self.code.isdigit() or int(self.code) < 400 or self.code in EXPECTED_ANSWERS:
            return False
        return not (self.code == "429" and self.resource == EVICTION)


def describe_request(method: str, url: str) -> tuple[str, str]:
    """The Kubernetes verb (get, list, watch, create, update, patch, delete, deletecollection)
    and resource (`pods`, `pods/eviction`, `nodesmaintenancewindows`) of a request URL.

    Discovery (`/apis/GROUP/VERSION`) is `(discovery)`, other paths `(non-resource)`.
    """
    method = method.upper()
    split = urlsplit(url)
    parts = [part for part in split.path.split("/") if part]
    query = parse_qs(split.query)
    watch = query.get("watch", [""])[0].lower() in ("true", "1")
    # A host may carry a path prefix (an API proxy): the API starts at `api` or `apis`.
    start = next((index for index, part in enumerate(parts) if part in ("api", "apis")), None)
    if start is None:
        return method.lower(), "(non-resource)"
    rest = parts[start + (2 if parts[start] == "api" else 3) :]
    if rest and rest[0] == "watch":  # the old /watch/ paths
        watch, rest = True, rest[1:]
    if not rest:
        return method.lower(), "(discovery)"
    if rest[0] == "namespaces" and len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
        rest = rest[2:]  # namespaces/NS/RESOURCE/...: a resource in the namespace
    resource = "/".join([rest[0], *rest[2:3]])
    if watch and method == "GET":
        return "watch", resource
    named = len(rest) > 1
    verb = _VERBS.get(method) if named else _COLLECTION_VERBS.get(method, _VERBS.get(method))
    return verb or method.lower(), resource
