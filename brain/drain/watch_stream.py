"""What the drain's two hand-written watch threads share (pods of a node, PodDisruptionBudgets):
reading a streamed watch response line by line, and closing it from the event loop.

Each watch runs in its own thread on a raw response (`_preload_content=False`), because the
kubernetes client's Watch cannot be interrupted; stopping shuts the response's socket so the
blocked read returns at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterable
from typing import Any, cast

from kubernetes.watch import watch as kubernetes_watch

# The bookmark annotation that ends a watch-list's initial state (sendInitialEvents).
INITIAL_EVENTS_END_ANNOTATION = "k8s.io/initial-events-end"

response_lines = cast(Callable[[Any], Iterable[str]], kubernetes_watch.iter_resp_lines)


def close_response(response: Any) -> None:
    """Give a finished watch response's connection back (errors: it is gone already)."""
    with contextlib.suppress(Exception):
        response.close()
        response.release_conn()


async def stop_watch_thread(
    stopping: threading.Event, response: Any, thread: threading.Thread | None
) -> None:
    """Tell the thread to stop, shut the response it is reading, and wait for it (10 s)."""
    stopping.set()
    if response is not None:
        with contextlib.suppress(Exception):
            response.shutdown()
    if thread is not None and thread.is_alive():
        await asyncio.to_thread(thread.join, 10.0)
