"""preDrain / postReboot hooks: HTTP POSTs the flow waits on, without ever sleeping in the flow.

The reconcile loop is level-triggered: on every pass it asks `HookCaller.poll(...)` "has this
hook succeeded for this node and boot?" and gets an answer at once:

- `Succeeded`: a call answered 2xx; the node goes on (and the hook is not called again for this
  node, boot and URL);
- `Pending`: a call is in flight or the next retry is not due yet (`retry_in_seconds` says when;
  the `wake` callback is also called as soon as a call finishes, so the loop need not poll);
- `Failed`: every retry failed; the node waits with `message` as the reason. Calls go on at a
  slow pace (`failed_retry_seconds`), so a hook endpoint that comes back unblocks the node
  without a person acting.

Each call is a POST of JSON: {"hook", "window", "node", "phase", "bootID", "attempt", "sentAt"}
plus any `details`; 2xx means go on, anything else (other status, timeout, refused) is a failed
attempt. Retries are spaced by exponential backoff. The memory is per (hook, window, node,
bootID, URL) and in the brain's memory only: after a restart the hook is called again, so hook
endpoints must be idempotent (the body carries what they need to recognise a repeat).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)

# At most this much of a failing endpoint's answer goes into the reason.
MAX_REASON_BODY = 200


class Hook(StrEnum):
    PRE_DRAIN = "preDrain"
    POST_REBOOT = "postReboot"


class HookState(StrEnum):
    PENDING = "Pending"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class HookEndpoint:
    """One hook of a window (`spec.hooks.preDrain`): where, how long to wait, how often to retry."""

    url: str
    timeout_seconds: float = 10.0
    retries: int = 3


@dataclass(frozen=True)
class HookStatus:
    """What the flow needs: the state, a reason for people, and when to look again."""

    state: HookState
    attempts: int
    message: str = ""
    # Seconds until the next call is due (None: a call is in flight or the hook succeeded).
    retry_in_seconds: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.state is HookState.SUCCEEDED


@dataclass
class _Record:
    """What we remember of one hook for one node and boot."""

    attempts: int = 0  # started calls
    failures: int = 0  # finished calls that failed
    succeeded: bool = False
    last_finished: float | None = None
    last_error: str = ""
    task: asyncio.Task[None] | None = None
    wake: Callable[[], None] | None = None


@dataclass(frozen=True)
class _Key:
    hook: str
    window: str
    node: str
    boot_id: str
    url: str


@dataclass
class HookCaller:
    """Calls hooks in the background and remembers their outcome per node and boot.

    One instance for the whole brain; use it from the brain's event loop only.
    """

    backoff_seconds: float = 5.0
    max_backoff_seconds: float = 300.0
    failed_retry_seconds: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _records: dict[_Key, _Record] = field(default_factory=dict)

    async def poll(
        self,
        hook: Hook | str,
        endpoint: HookEndpoint,
        *,
        window: str,
        node: str,
        boot_id: str,
        phase: str,
        details: Mapping[str, Any] | None = None,
        wake: Callable[[], None] | None = None,
    ) -> HookStatus:
        """The hook's state for this node and boot; starts a call in the background when due.

        Never waits for the HTTP call. `wake` is called (in the event loop) when a call
        finishes, e.g. the window's `asyncio.Event.set`, so the loop re-runs at once.
        """
        key = _Key(str(hook), window, node, boot_id, endpoint.url)
        record = self._records.setdefault(key, _Record())
        record.wake = wake
        if record.succeeded:
            return HookStatus(HookState.SUCCEEDED, record.attempts)
        if record.task is not None and not record.task.done():
            return self._status(key, record, endpoint, retry_in=None)
        due = self._next_due(record, endpoint)
        now = self.clock()
        if now < due:
            return self._status(key, record, endpoint, retry_in=due - now)
        record.attempts += 1
        body = {
            "hook": str(hook),
            "window": window,
            "node": node,
            "phase": phase,
            "bootID": boot_id,
            "attempt": record.attempts,
            "sentAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **(details or {}),
        }
        record.task = asyncio.get_running_loop().create_task(
            self._call(key, record, endpoint, body), name=f"hook {hook} {node}"
        )
        return self._status(key, record, endpoint, retry_in=None)

    def forget(self, node: str, window: str | None = None) -> None:
        """Drop what is remembered for a node (of one window, or all): call when it is done."""
        for key in [k for k in self._records if k.node == node]:
            if window is None or key.window == window:
                self._drop(key)

    def forget_window(self, window: str) -> None:
        for key in [k for k in self._records if k.window == window]:
            self._drop(key)

    async def close(self) -> None:
        """Cancel the calls in flight (at shutdown)."""
        tasks = [r.task for r in self._records.values() if r.task is not None and not r.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _drop(self, key: _Key) -> None:
        record = self._records.pop(key)
        if record.task is not None and not record.task.done():
            record.task.cancel()

    def _backoff(self, attempts: int) -> float:
        return float(min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempts - 1)))

    def _exhausted(self, record: _Record, endpoint: HookEndpoint) -> bool:
        return record.failures > endpoint.retries

    def _next_due(self, record: _Record, endpoint: HookEndpoint) -> float:
        if record.last_finished is None:
            return float("-inf")
        if self._exhausted(record, endpoint):
            return record.last_finished + self.failed_retry_seconds
        return record.last_finished + self._backoff(record.failures)

    def _status(
        self, key: _Key, record: _Record, endpoint: HookEndpoint, retry_in: float | None
    ) -> HookStatus:
        if not self._exhausted(record, endpoint):
            message = f"calling {key.hook} hook {key.url}"
            if record.last_error:
                message += f" (attempt {record.failures} failed: {record.last_error})"
            return HookStatus(HookState.PENDING, record.attempts, message, retry_in)
        message = (
            f"{key.hook} hook {key.url} failed {record.failures} times, last: {record.last_error};"
            f" trying again every {self.failed_retry_seconds:g} s"
        )
        return HookStatus(HookState.FAILED, record.attempts, message, retry_in)

    async def _call(
        self, key: _Key, record: _Record, endpoint: HookEndpoint, body: Mapping[str, Any]
    ) -> None:
        try:
            error = await post_json(endpoint.url, body, endpoint.timeout_seconds)
        except asyncio.CancelledError:
            raise
        except Exception as unexpected:
            error = f"{type(unexpected).__name__}: {unexpected}"
        record.last_finished = self.clock()
        record.succeeded = error is None
        record.last_error = error or ""
        record.failures += error is not None
        if error is not None:
            logger.warning(
                "%s hook for node %s (window %s) failed, attempt %d: %s",
                key.hook,
                key.node,
                key.window,
                record.attempts,
                error,
            )
        if record.wake is not None:
            record.wake()


async def post_json(url: str, body: Mapping[str, Any], timeout_seconds: float) -> str | None:
    """POST `body` as JSON; None on a 2xx answer, else why it failed (for the node's reason)."""
    timeout = aiohttp.ClientTimeout(total=timeout_seconds)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(
                url,
                json=dict(body),
                allow_redirects=False,
                headers={"User-Agent": "pitstop-brain"},
            ) as response,
        ):
            if 200 <= response.status < 300:
                return None
            text = (await response.content.read(MAX_REASON_BODY)).decode("utf-8", "replace")
            return f"HTTP {response.status}" + (f": {text.strip()}" if text.strip() else "")
    except TimeoutError:
        return f"no answer within {timeout_seconds:g} s"
    except (aiohttp.ClientError, OSError, ValueError) as error:
        return f"{type(error).__name__}: {error}"
