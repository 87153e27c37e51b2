"""A real HTTP server on 127.0.0.1 whose answers a test scripts, and which records requests.

Used to play Prometheus, hook endpoints and notification endpoints. Every reply can be delayed
(to play a server that hangs); stopping the server cuts every delay short, so tests never hang.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    delay_seconds: float = 0.0
    content_type: str = "application/json"

    @classmethod
    def json(cls, value: Any, status: int = 200, delay_seconds: float = 0.0) -> Reply:
        return cls(status=status, body=json.dumps(value).encode(), delay_seconds=delay_seconds)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class LoopbackServer:
    """Answers every request with `reply` (or the next of `replies`, when any are queued)."""

    reply: Reply = field(default_factory=Reply)
    replies: list[Reply] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    received: threading.Condition = field(default_factory=threading.Condition)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def next_reply(self) -> Reply:
        with self.received:
            return self.replies.pop(0) if self.replies else self.reply

    def record(self, request: Request) -> None:
        with self.received:
            self.requests.append(request)
            self.received.notify_all()

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[Request]:
        with self.received:
            if not self.received.wait_for(lambda: len(self.requests) >= count, timeout=timeout):
                raise TimeoutError(f"expected {count} requests, got {len(self.requests)}")
            return list(self.requests)


def _handler(server: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            server.record(Request(self.command, self.path, dict(self.headers.items()), body))
            reply = server.next_reply()
            if reply.delay_seconds and server.stopping.wait(reply.delay_seconds):
                return
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
            except OSError:
                pass  # the client gave up (a timeout test): nothing to answer

        do_GET = _serve  # noqa: N815 - http.server's naming
        do_POST = _serve  # noqa: N815
        do_PUT = _serve  # noqa: N815
        do_PATCH = _serve  # noqa: N815
        do_DELETE = _serve  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def loopback_server(reply: Reply | None = None) -> Iterator[LoopbackServer]:
    """Start a server on a free loopback port; stop it (and cut its delays short) on exit."""
    state = LoopbackServer(reply=reply or Reply())
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        state.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def refused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
