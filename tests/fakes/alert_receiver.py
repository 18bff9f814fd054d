"""A local HTTP endpoint that records the alerts POSTed to it, answering statuses a test scripts."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Receiver:
    """What the endpoint received, and what it answers next.

    Attributes:
        url: The endpoint's URL (any path is accepted).
        statuses: Statuses to answer, first to last; then 200 for every request.
        delays: Seconds to hold each request before answering, first to last (a blackholed
            endpoint); then none. Held requests are let go when the receiver closes.
        retry_after: The ``Retry-After`` header sent with every answer that is not a 2xx.
        requests: Every request: ``{"path", "headers", "body"}`` (the body parsed as JSON).
    """

    url: str
    statuses: list[int] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    retry_after: str | None = None
    closing: threading.Event = field(default_factory=threading.Event)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def bodies(self) -> list[Any]:
        """The JSON bodies received, in order (including those answered with an error)."""
        with self.lock:
            return [request["body"] for request in self.requests]

    def delivered(self) -> list[Any]:
        """The bodies answered with a 2xx."""
        with self.lock:
            return [request["body"] for request in self.requests if 200 <= (request["status"] or 0) < 300]


@contextmanager
def alert_receiver() -> Iterator[Receiver]:
    """Serve a :class:`Receiver` on 127.0.0.1 (a free port) for the duration of the block."""
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            with receiver.lock:
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                delay = receiver.delays.pop(0) if receiver.delays else 0.0
                request = {"path": self.path, "headers": dict(self.headers), "body": json.loads(raw), "status": None}
                receiver.requests.append(request)
            if delay and receiver.closing.wait(delay):
                return  # closing: the client gave up long ago (the request stays unanswered)
            with receiver.lock:
                request["status"] = status
            self.send_response(status)
            if receiver.retry_after is not None and not 200 <= status < 300:
                self.send_header("Retry-After", receiver.retry_after)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hook")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.closing.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
