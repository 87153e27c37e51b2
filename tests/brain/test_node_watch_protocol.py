"""The Node watch's protocol, played by an HTTP server that answers as the API server does:
paged list (`limit`, `continue`), watch from the list's resourceVersion with bookmarks, and a
new list when the watch says 410 Gone (a resourceVersion compacted away). The real API server
keeps old resourceVersions in its watch cache for minutes, so tests/integration/test_node_watch.py
covers the rest against it, and this one the 410.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from brain.core.node_view import NodeView, node_view_from_object
from brain.node_watch import NodeWatch
from tests.brain.loopback import Reply, loopback_server
from tests.brain.test_kube_pool import _kubeconfig


def _node(name: str, version: str, flagged: bool = False) -> dict[str, Any]:
    labels = {"pitstop.dev/reboot-required": "true"} if flagged else {}
    return {
        "metadata": {"name": name, "resourceVersion": version, "labels": labels},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def _page(items: list[dict[str, Any]], version: str, token: str = "") -> Reply:
    return Reply.json(
        {
            "kind": "NodeList",
            "metadata": {"resourceVersion": version, "continue": token},
            "items": items,
        }
    )


def _events(*events: dict[str, Any], delay_seconds: float = 0.0) -> Reply:
    body = "".join(json.dumps(event) + "\n" for event in events).encode()
    return Reply(body=body, delay_seconds=delay_seconds)


def test_a_watch_gone_410_lists_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes.config import kube_config

    from brain.kube import make_api_client

    gone = {"kind": "Status", "status": "Failure", "reason": "Expired", "code": 410}
    with loopback_server() as server:
        server.replies = [
            _page([_node("a", "5")], "10", token="next"),
            _page([_node("b", "6")], "10"),
            _events(
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
                {"type": "MODIFIED", "object": _node("a", "13")},  # equal view: no wake-up
                {"type": "ERROR", "object": gone},
            ),
            # Meanwhile b was flagged and a deleted: the new list tells.
            _page([_node("b", "20", flagged=True)], "21"),
            _events(delay_seconds=1),  # a quiet watch
        ]
        server.reply = _events(delay_seconds=1)
        monkeypatch.setattr(
            kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(_kubeconfig(tmp_path, server.url))
        )
        api_client = make_api_client()
        # Where Nodes are parsed: in the watch's thread, never on the event loop.
        parsed_in: set[int] = set()

        def parse(item: dict[str, Any]) -> NodeView:
            parsed_in.add(threading.get_ident())
            return node_view_from_object(item)

        monkeypatch.setattr("brain.node_watch.node_view_from_object", parse)

        async def scenario() -> None:
            wakes: list[float] = []
            watch = NodeWatch(api_client, on_change=lambda: wakes.append(time.monotonic()))
            watch.start()
            try:
                await asyncio.wait_for(watch.synced.wait(), 10)
                deadline = time.monotonic() + 10
                while watch.lists < 2 or len(server.requests) < 5:
                    assert time.monotonic() < deadline, server.requests
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.1)
                assert set(watch.views) == {"b"}
                assert watch.views["b"].reboot_required
                assert len(wakes) == 2  # the first list, the second (its changes in one)
                assert parsed_in and threading.get_ident() not in parsed_in
            finally:
                await watch.stop()

        asyncio.run(scenario())
        api_client.close()
    queries = [parse_qs(urlparse(request.path).query) for request in server.requests]
    assert queries[0] == {"limit": ["250"]}
    assert queries[1] == {"limit": ["250"], "continue": ["next"]}
    assert queries[2]["watch"] == ["True"] or queries[2]["watch"] == ["true"]
    assert queries[2]["resourceVersion"] == ["10"]
    assert queries[2]["allowWatchBookmarks"] in (["True"], ["true"])
    assert queries[3] == {"limit": ["250"]}
    assert queries[4]["resourceVersion"] == ["21"]
