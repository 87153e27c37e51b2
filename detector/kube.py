"""A small Kubernetes API client over the standard library: get, merge-patch and watch a Node.

The official `kubernetes` client costs ~45 MiB of resident memory; the detector needs three
requests, so it speaks HTTP itself with http.client, ssl and json. It authenticates like
client-go: inside a pod with the projected service-account token (re-read when the kubelet
rotates it) and the cluster CA; outside with a kubeconfig (bearer token or token file, client
certificate, CA as data or file). Exec plugins and auth providers are not supported.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

PATCH_CONTENT_TYPE = "application/merge-patch+json"
USER_AGENT = "pitstop-detector"


class ConfigError(Exception):
    """The connection settings (kubeconfig, service account) are unusable; says which and why."""


class ApiError(Exception):
    """A request failed: `status` is the HTTP status, or 0 when no answer came at all."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status or 'no answer'}: {message}")
        self.status = status


class WatchExpiredError(ApiError):
    """The watch's resource version is too old (410 Gone): start again from the current state."""


class TokenSource:
    """A bearer token, from a string or from a file re-read whenever the file changes."""

    def __init__(self, token: str | None = None, path: str | None = None) -> None:
        self._token = token.strip() if token else None
        self._path = path
        self._identity: tuple[int, int, int] | None = None
        self._lock = threading.Lock()

    @property
    def from_file(self) -> bool:
        """Whether the token is read from a file (and so may rotate)."""
        return self._path is not None

    def get(self, force: bool = False) -> str | None:
        if self._path is None:
            return self._token
        with self._lock:
            try:
                stat = os.stat(self._path)
            except OSError as error:
                raise ApiError(0, f"cannot read token file {self._path}: {error}") from None
            identity = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if force or identity != self._identity or self._token is None:
                with open(self._path, encoding="utf-8") as handle:
                    self._token = handle.read().strip()
                self._identity = identity
            return self._token


@dataclass(frozen=True)
class Endpoint:
    """Where the API server is and how to talk to it."""

    scheme: str
    host: str
    port: int
    tls: ssl.SSLContext | None
    token: TokenSource


def _tls_context(
    ca_file: str | None = None,
    ca_data: str | None = None,
    certificate_file: str | None = None,
    key_file: str | None = None,
    certificate_data: bytes | None = None,
    key_data: bytes | None = None,
    insecure: bool = False,
) -> ssl.SSLContext:
    """A client TLS context trusting only the cluster CA (system CAs are not loaded: cheaper
    and stricter)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif ca_file or ca_data:
        context.load_verify_locations(cafile=ca_file, cadata=ca_data)
    else:
        context.load_default_certs()
    if certificate_data is not None and key_data is not None:
        _load_chain_from_memory(context, certificate_data, key_data)
    elif certificate_file and key_file:
        context.load_cert_chain(certificate_file, key_file)
    return context


def _load_chain_from_memory(context: ssl.SSLContext, certificate: bytes, key: bytes) -> None:
    """ssl wants file names: memfd files hand it the PEM without touching a (read-only) disk."""
    descriptors = [os.memfd_create("pitstop-cert"), os.memfd_create("pitstop-key")]
    try:
        for descriptor, data in zip(descriptors, (certificate, key), strict=True):
            os.write(descriptor, data)
        context.load_cert_chain(
            f"/proc/self/fd/{descriptors[0]}", f"/proc/self/fd/{descriptors[1]}"
        )
    finally:
        for descriptor in descriptors:
            os.close(descriptor)


def in_cluster_endpoint(host: str, port: int, service_account_dir: str) -> Endpoint:
    """The endpoint inside a pod: KUBERNETES_SERVICE_HOST/PORT, the token and the CA file."""
    token_path = os.path.join(service_account_dir, "token")
    ca_path = os.path.join(service_account_dir, "ca.crt")
    for path in (token_path, ca_path):
        if not os.path.isfile(path):
            raise ConfigError(
                f"service account file {path} is missing (set --service-account-dir, or "
                "KUBECONFIG outside a cluster)"
            )
    try:
        context = _tls_context(ca_file=ca_path)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"cannot load the cluster CA {ca_path}: {error}") from None
    if ":" in host and not host.startswith("["):
        host = host.strip("[]")
    return Endpoint("https", host, port, context, TokenSource(path=token_path))


def kubeconfig_endpoint(path: str) -> Endpoint:
    """The endpoint of a kubeconfig's current context."""
    import yaml  # only outside a cluster: PyYAML costs ~4 MiB

    try:
        with open(path, encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read kubeconfig {path}: {error}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"kubeconfig {path} is not a mapping")
    base = os.path.dirname(os.path.abspath(path))
    try:
        context_name = config["current-context"]
        context = _named(config, "contexts", context_name, "context")
        cluster = _named(config, "clusters", context["cluster"], "cluster")
        user = _named(config, "users", context["user"], "user") if context.get("user") else {}
    except (KeyError, TypeError) as error:
        raise ConfigError(f"kubeconfig {path}: missing {error}") from None
    if "exec" in user or "auth-provider" in user:
        raise ConfigError(f"kubeconfig {path}: exec and auth-provider users are not supported")
    server = urlsplit(str(cluster.get("server", "")))
    if server.scheme not in ("https", "http") or not server.hostname:
        raise ConfigError(f"kubeconfig {path}: server {cluster.get('server')!r} is not a URL")
    port = server.port or (443 if server.scheme == "https" else 80)

    def local(name: str | None) -> str | None:
        return os.path.join(base, name) if name else None

    def data(name: str) -> bytes | None:
        value = cluster.get(name) if name.startswith("certificate-authority") else user.get(name)
        return base64.b64decode(value) if value else None

    context_tls: ssl.SSLContext | None = None
    try:
        if server.scheme == "https":
            ca_data = data("certificate-authority-data")
            context_tls = _tls_context(
                ca_file=local(cluster.get("certificate-authority")),
                ca_data=ca_data.decode() if ca_data else None,
                certificate_file=local(user.get("client-certificate")),
                key_file=local(user.get("client-key")),
                certificate_data=data("client-certificate-data"),
                key_data=data("client-key-data"),
                insecure=bool(cluster.get("insecure-skip-tls-verify")),
            )
    except (OSError, ssl.SSLError, ValueError) as error:
        raise ConfigError(f"kubeconfig {path}: bad TLS material: {error}") from None
    token = TokenSource(token=user.get("token"), path=local(user.get("tokenFile")))
    return Endpoint(server.scheme, server.hostname, port, context_tls, token)


def _named(config: Mapping[str, Any], section: str, name: str, key: str) -> dict[str, Any]:
    for entry in config.get(section) or []:
        if entry.get("name") == name:
            return dict(entry[key])
    raise KeyError(f"{section[:-1]} {name!r}")


def _enable_keepalive(sock: socket.socket) -> None:
    """Detect a silently vanished server on the long-lived watch in about a minute."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


class NodeClient:
    """Get, merge-patch and watch one Node. Every failure is an ApiError; nothing else leaks."""

    def __init__(self, endpoint: Endpoint, node_name: str, timeout_seconds: float) -> None:
        self.endpoint = endpoint
        self.node_name = node_name
        self.timeout_seconds = timeout_seconds
        self._path = f"/api/v1/nodes/{quote(node_name, safe='')}"

    def _connect(self) -> http.client.HTTPConnection:
        if self.endpoint.scheme == "https":
            return http.client.HTTPSConnection(
                self.endpoint.host,
                self.endpoint.port,
                timeout=self.timeout_seconds,
                context=self.endpoint.tls,
            )
        return http.client.HTTPConnection(
            self.endpoint.host, self.endpoint.port, timeout=self.timeout_seconds
        )

    def _headers(self, force_token: bool = False) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        token = self.endpoint.token.get(force=force_token)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        for attempt in range(2):
            connection = self._connect()
            try:
                headers = self._headers(force_token=attempt > 0)
                payload = None
                if body is not None:
                    payload = json.dumps(body).encode()
                    headers["Content-Type"] = PATCH_CONTENT_TYPE
                connection.request(method, path, body=payload, headers=headers)
                response = connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException, ValueError) as error:
                raise ApiError(0, f"{method} {path}: {error}") from None
            finally:
                connection.close()
            if response.status == 401 and attempt == 0 and self.endpoint.token.from_file:
                continue  # the token may have just rotated: read it again, once
            if response.status >= 400:
                raise ApiError(response.status, f"{method} {path}: {_status_message(data)}")
            try:
                decoded: dict[str, Any] = json.loads(data)
            except ValueError:
                raise ApiError(response.status, f"{method} {path}: answer is not JSON") from None
            return decoded
        raise ApiError(401, f"{method} {path}: unauthorised")  # pragma: no cover

    def get_node(self) -> dict[str, Any]:
        return self._request("GET", self._path)

    def patch_node(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """One JSON merge patch (RFC 7386) on the Node; returns the Node as now stored."""
        return self._request("PATCH", self._path, body)

    def watch_node(
        self, resource_version: str | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Stream (type, object) events for this Node only.

        Without a resource version the server first sends the Node as it is now (ADDED), so
        no separate read (and no `list` permission) is needed. The stream lasts until the
        server ends it (after its minimum request timeout, 30-60 min by default) or fails;
        bookmarks keep the last resource version fresh for a cheap resume.
        """
        query: dict[str, str] = {
            "watch": "true",
            "fieldSelector": f"metadata.name={self.node_name}",
            "allowWatchBookmarks": "true",
        }
        if resource_version:
            query["resourceVersion"] = resource_version
        path = f"/api/v1/nodes?{urlencode(query)}"
        connection = self._connect()
        try:
            connection.request("GET", path, headers=self._headers())
            response = connection.getresponse()
            if response.status >= 400:
                data = response.read()
                if response.status == 410:
                    raise WatchExpiredError(410, _status_message(data))
                raise ApiError(response.status, f"watch: {_status_message(data)}")
            if connection.sock is not None:
                _enable_keepalive(connection.sock)
                connection.sock.settimeout(None)  # a quiet node is normal; keepalive guards
            while True:
                line = response.readline()
                if not line:
                    return
                if not line.strip():
                    continue
                event = json.loads(line)
                kind = str(event.get("type", ""))
                obj = event.get("object") or {}
                if kind == "ERROR":
                    code = int(obj.get("code") or 0)
                    if code == 410:
                        raise WatchExpiredError(410, str(obj.get("message", "expired")))
                    raise ApiError(code, f"watch: {obj.get('message', 'error event')}")
                yield kind, obj
        except (OSError, http.client.HTTPException, ValueError) as error:
            raise ApiError(0, f"watch: {error}") from None
        finally:
            connection.close()


def _status_message(data: bytes) -> str:
    """The `message` of a Kubernetes Status body, or the start of whatever came back."""
    try:
        decoded = json.loads(data)
        if isinstance(decoded, dict) and decoded.get("message"):
            return str(decoded["message"])
    except ValueError:
        pass
    return data[:200].decode("utf-8", errors="replace")
