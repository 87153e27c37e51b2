"""The status writer's Lease cycle on the real API server (brain/status_writer.py): created on
the first status write, renewed on its own resourceVersion without a read, 409 when another
brain wrote it, taken over once unchanged for the lease duration, handed back on a clean stop;
and not one request while nothing needs writing. Two StatusWriters with a short lease, each on
its own client (so each counts only its own requests)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from kubernetes import client

from brain.kube import Kube
from brain.status_writer import LEASE_NAME, SAFETY_MARGIN_SECONDS, StatusWriter
from tests.integration.pitstop_env import PitstopEnv

LEASE_SECONDS = 4.0
RENEW_SECONDS = 1.0


def test_the_lease_is_held_on_demand_renewed_on_its_own_version_and_taken_over(
    env: PitstopEnv,
) -> None:
    kubes = {name: Kube(client.ApiClient(env.api.configuration)) for name in ("a", "b")}
    writers = {
        name: StatusWriter(
            kube,
            env.namespace,
            identity=f"brain-{name}",
            lease_seconds=LEASE_SECONDS,
            renew_seconds=RENEW_SECONDS,
        )
        for name, kube in kubes.items()
    }
    a, b = writers["a"], writers["b"]
    coordination = client.CoordinationV1Api(env.api)
    counted: dict[str, Counter[str]] = {name: Counter() for name in kubes}

    def sent(name: str) -> dict[str, int]:
        """Requests of brain `name` since last asked."""
        now = Counter(kubes[name].requests)
        new = now - counted[name]
        counted[name] = now
        return dict(new)

    def lease() -> client.V1Lease:
        return coordination.read_namespaced_lease(LEASE_NAME, env.namespace)

    async def run() -> None:
        # The first status write: no Lease yet, a reads (404) and creates it.
        assert await a.may_write()
        assert sent("a") == {"get leases": 1, "create leases": 1}
        assert lease().spec.holder_identity == "brain-a"
        # While its hold is fresh: no request at all.
        assert await a.may_write() and await a.may_write()
        assert sent("a") == {}
        # Once older than the renew period: one update on its own last write, no read.
        await asyncio.sleep(RENEW_SECONDS + 0.1)
        version = lease().metadata.resource_version
        assert await a.may_write()
        assert sent("a") == {"update leases": 1}
        assert lease().metadata.resource_version != version
        # b has status to write: it reads, follows, and reads no more within a renew period.
        assert not await b.may_write()
        assert not await b.may_write()
        assert sent("b") == {"get leases": 1}
        # Nothing to write for a while: nobody asks, nothing is sent, a's hold lapses.
        await asyncio.sleep(LEASE_SECONDS)
        assert not a.is_writer and a.holds_lease
        assert sent("a") == {} and sent("b") == {}
        # b wants to write: a's record has not changed for the lease duration since b saw it,
        # so b takes the Lease over (on the resourceVersion it read).
        assert await b.may_write()
        assert sent("b") == {"get leases": 1, "update leases": 1}
        taken = lease()
        assert taken.spec.holder_identity == "brain-b"
        assert taken.spec.lease_transitions == 1
        # a comes back with status to write: its renewal on its own version is refused (409),
        # it reads the Lease and follows.
        assert not await a.may_write()
        assert sent("a") == {"update leases": 1, "get leases": 1}
        assert not a.holds_lease and b.is_writer
        # b stops cleanly: one request hands the Lease back, and a takes it at its next look.
        await b.release()
        assert sent("b") == {"update leases": 1}
        assert lease().spec.holder_identity == ""
        await asyncio.sleep(RENEW_SECONDS + 0.1)
        before = time.monotonic()
        assert await a.may_write()
        after = time.monotonic()
        assert sent("a") == {"get leases": 1, "update leases": 1}
        # Its hold counts from before its take-over was sent, minus the safety margin.
        hold = LEASE_SECONDS - SAFETY_MARGIN_SECONDS
        await asyncio.sleep(before + hold - 0.05 - time.monotonic())
        assert a.is_writer
        await asyncio.sleep(after + hold + 0.05 - time.monotonic())
        assert not a.is_writer

    try:
        asyncio.run(run())
    finally:
        for kube in kubes.values():
            kube.api_client.close()
