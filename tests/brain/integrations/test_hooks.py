"""Hooks against a real loopback endpoint that answers ok, fails, or hangs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from brain.integrations.hooks import Hook, HookCaller, HookEndpoint, HookState, HookStatus
from tests.brain.loopback import LoopbackServer, Reply, loopback_server, refused_port

WINDOW, NODE, BOOT = "weekend", "node-1", "boot-aaa"


def poller(
    caller: HookCaller, endpoint: HookEndpoint, boot_id: str = BOOT
) -> tuple[Callable[[], Awaitable[HookStatus]], asyncio.Event]:
    """A poll function bound to one node, and the event its `wake` sets."""
    woken = asyncio.Event()

    async def poll() -> HookStatus:
        return await caller.poll(
            Hook.PRE_DRAIN,
            endpoint,
            window=WINDOW,
            node=NODE,
            boot_id=boot_id,
            phase="Pending",
            details={"zone": "a"},
            wake=woken.set,
        )

    return poll, woken


async def poll_until(
    poll: Callable[[], Awaitable[HookStatus]], state: HookState, seconds: float = 10.0
) -> HookStatus:
    """Poll like the reconcile loop: again and again, never sleeping inside poll itself."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = await poll()
        if status.state is state:
            return status
        await asyncio.sleep(0.01)
    raise AssertionError(f"never reached {state}, last {status}")


def test_ok_endpoint_succeeds_once_with_the_node_in_the_body() -> None:
    async def scenario(server: LoopbackServer) -> None:
        caller = HookCaller()
        poll, woken = poller(caller, HookEndpoint(url=server.url + "/hooks/pre"))
        first = await poll()
        assert first.state is HookState.PENDING and first.attempts == 1
        await asyncio.wait_for(woken.wait(), 5)
        status = await poll()
        assert status.succeeded and status.attempts == 1
        # Succeeded is remembered: further passes do not call again.
        await poll()
        assert len(server.requests) == 1

    with loopback_server(Reply(status=204)) as server:
        asyncio.run(scenario(server))
        (request,) = server.requests
    assert request.method == "POST" and request.path == "/hooks/pre"
    assert request.headers["Content-Type"].startswith("application/json")
    body = request.json()
    assert body["hook"] == "preDrain" and body["window"] == WINDOW and body["node"] == NODE
    assert body["bootID"] == BOOT and body["phase"] == "Pending" and body["attempt"] == 1
    assert body["zone"] == "a" and body["sentAt"].endswith("Z")


def test_failing_endpoint_retries_then_fails_with_the_reason_then_recovers() -> None:
    async def scenario(server: LoopbackServer) -> None:
        caller = HookCaller(backoff_seconds=0.05, failed_retry_seconds=0.3)
        poll, _ = poller(caller, HookEndpoint(url=server.url, retries=2))
        failed = await poll_until(poll, HookState.FAILED)
        assert failed.attempts == 3
        assert "HTTP 503: maintenance in progress" in failed.message
        assert "failed 3 times" in failed.message
        assert failed.retry_in_seconds is not None and 0 < failed.retry_in_seconds <= 0.3
        assert len(server.requests) == 3
        # The endpoint recovers: the slow retry after failing picks it up, no person needed.
        server.reply = Reply(status=200)
        await poll_until(poll, HookState.SUCCEEDED)
        assert len(server.requests) == 4

    with loopback_server(Reply(status=503, body=b"maintenance in progress")) as server:
        asyncio.run(scenario(server))
    assert [request.json()["attempt"] for request in server.requests] == [1, 2, 3, 4]


def test_hanging_endpoint_never_blocks_the_poll() -> None:
    async def scenario(server: LoopbackServer) -> None:
        caller = HookCaller(backoff_seconds=0.01)
        poll, _ = poller(caller, HookEndpoint(url=server.url, timeout_seconds=0.3, retries=0))
        started = time.monotonic()
        first = await poll()
        assert time.monotonic() - started < 0.2
        assert first.state is HookState.PENDING
        failed = await poll_until(poll, HookState.FAILED)
        assert "no answer within 0.3 s" in failed.message
        await caller.close()

    with loopback_server(Reply(delay_seconds=30)) as server:
        asyncio.run(scenario(server))


def test_retries_are_spaced_by_exponential_backoff() -> None:
    now = [1000.0]

    async def scenario(server: LoopbackServer) -> None:
        caller = HookCaller(backoff_seconds=5, max_backoff_seconds=12, clock=lambda: now[0])
        poll, woken = poller(caller, HookEndpoint(url=server.url, retries=5))
        waits = []
        for attempt in range(1, 5):
            woken.clear()
            assert (await poll()).attempts == attempt
            await asyncio.wait_for(woken.wait(), 5)
            status = await poll()
            assert status.state is HookState.PENDING
            assert f"attempt {attempt} failed: HTTP 500" in status.message
            waits.append(status.retry_in_seconds)
            # Not due yet: polling again makes no call.
            now[0] += status.retry_in_seconds - 0.5  # type: ignore[operator]
            assert (await poll()).attempts == attempt
            now[0] += 0.5
        assert waits == [5, 10, 12, 12]
        assert len(server.requests) == 4

    with loopback_server(Reply(status=500)) as server:
        asyncio.run(scenario(server))


def test_each_boot_and_node_has_its_own_memory() -> None:
    async def scenario(server: LoopbackServer) -> None:
        caller = HookCaller()
        endpoint = HookEndpoint(url=server.url)
        poll_old, _ = poller(caller, endpoint, boot_id="boot-1")
        await poll_until(poll_old, HookState.SUCCEEDED)
        poll_new, _ = poller(caller, endpoint, boot_id="boot-2")
        assert (await poll_new()).state is HookState.PENDING
        await poll_until(poll_new, HookState.SUCCEEDED)
        caller.forget(NODE)
        assert (await poll_old()).state is HookState.PENDING
        await poll_until(poll_old, HookState.SUCCEEDED)

    with loopback_server(Reply(status=200)) as server:
        asyncio.run(scenario(server))
        server.wait_for_requests(3)
    assert [request.json()["bootID"] for request in server.requests] == [
        "boot-1",
        "boot-2",
        "boot-1",
    ]


def test_refused_connection_is_a_failed_attempt() -> None:
    async def scenario() -> None:
        caller = HookCaller(backoff_seconds=0.01)
        poll, _ = poller(caller, HookEndpoint(url=f"http://127.0.0.1:{refused_port()}", retries=1))
        failed = await poll_until(poll, HookState.FAILED)
        assert failed.attempts == 2 and "Connect" in failed.message

    asyncio.run(scenario())
