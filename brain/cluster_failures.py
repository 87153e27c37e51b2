"""The common failures of every command (pitstop, pitstop-brain) as one line, not a traceback.

No kubeconfig, an unreachable API server, a denied request (the API server's own message names
the verb and the resource), a CRD that is not installed, an unreadable lock: each is something
a person fixes outside Pitstop, so the command prints what is wrong and exits. Exit code 2 for
configuration the caller gave (no usable kubeconfig), 1 for what the cluster answered.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable
from typing import Any

EXIT_FAILURE = 1
EXIT_CONFIGURATION = 2

CRD_MISSING = (
    "the NodesMaintenanceWindow CRD is not installed: install it with"
    " kubectl apply --server-side -f charts/pitstop/crds/ (see docs/install.md)"
)


class CommandError(Exception):
    """A failure already put in words: print it and exit with `exit_code`."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _status_message(error: Any) -> str:
    """The message of the API server's Status object, else its reason."""
    body = getattr(error, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body.strip():
        try:
            status = json.loads(body)
        except ValueError:
            return body.strip().splitlines()[0]
        if isinstance(status, dict) and status.get("message"):
            return str(status["message"])
    return str(getattr(error, "reason", "") or "no message")


def _is_status_object(error: Any) -> bool:
    body = getattr(error, "body", None)
    try:
        return isinstance(json.loads(body), dict) if body else False
    except (TypeError, ValueError):
        return False


def _connection_reason(reason: object) -> str:
    # urllib3 prefixes the connection object's repr: "<HTTPSConnection(...) at 0x..>: Failed..."
    return re.sub(r"^<[^>]*>:\s*", "", str(reason)) or type(reason).__name__


def describe(error: BaseException) -> tuple[str, int] | None:
    """One line and an exit code for a failure a person fixes outside Pitstop, else None."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException
    from pydantic import ValidationError
    from urllib3.exceptions import HTTPError, MaxRetryError

    if isinstance(error, CommandError):
        return str(error), error.exit_code
    if isinstance(error, ConfigException):
        return (
            f"no usable Kubernetes configuration ({error}): set KUBECONFIG or --kubeconfig,"
            " or run in a pod with a service account",
            EXIT_CONFIGURATION,
        )
    if isinstance(error, ApiException):
        status = error.status or 0
        message = _status_message(error)
        if status == 401:
            return f"the API server rejected the credentials (401 Unauthorized): {message}", 1
        if status == 403:
            return f"permission denied (403 Forbidden): {message}", EXIT_FAILURE
        if status == 404 and not _is_status_object(error):
            # An unknown group/version answers a bare "404 page not found", not a Status.
            return f"the API server does not serve this resource type (404): {message}", 1
        return f"the API server answered {status} {error.reason or ''}: {message}", 1
    if isinstance(error, MaxRetryError):
        pool = getattr(error, "pool", None)
        where = f"{pool.host}:{pool.port}" if pool is not None else "the configured address"
        reason = _connection_reason(error.reason) if error.reason else "no answer"
        return f"cannot reach the API server at {where}: {reason}", EXIT_FAILURE
    if isinstance(error, HTTPError | ConnectionError | TimeoutError):
        return f"cannot reach the API server: {_connection_reason(error)}", EXIT_FAILURE
    if isinstance(error, ValidationError) and error.title == "LockState":
        first = error.errors()[0] if error.errors() else {"msg": str(error)}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return (
            f"the lock is unreadable (its state.json does not parse: {where or 'document'}:"
            f" {first['msg']})",
            EXIT_FAILURE,
        )
    return None


def quiet_client_logs() -> None:
    """urllib3 logs each connection retry as a WARNING; the one line below says it all."""
    logging.getLogger("urllib3").setLevel(logging.ERROR)


def run_command(program: str, command: Callable[[], int]) -> int:
    """Run `command`; a common failure becomes `program: <one line>` on stderr and its code."""
    quiet_client_logs()
    try:
        return command()
    except Exception as error:
        described = describe(error)
        if described is None:
            raise
        message, exit_code = described
        print(f"{program}: {message}", file=sys.stderr)
        return exit_code
