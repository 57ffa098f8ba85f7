"""A real HTTP webhook receiver for tests and benchmarks: records what arrives."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    # A dispatcher opens up to 64 connections at once (its delivery pool); the default
    # listen backlog of 5 would reset some of them, which no real receiver would.
    request_queue_size = 128
    on_connection: Callable[[], None] = staticmethod(lambda: None)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.on_connection()
        super().process_request(request, client_address)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() on arrival

    def json(self) -> object:
        return json.loads(self.body)


# (path, attempt number for that path) -> (status, headers)
Responder = Callable[[str, int], tuple[int, dict[str, str]]]


@dataclass
class Receiver:
    responder: Responder = lambda path, n: (200, {})
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                at = time.time()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    attempt = 1 + sum(1 for r in receiver.received if r.path == self.path)
                    receiver.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, at)
                    )
                    receiver._lock.notify_all()
                status, headers = receiver.responder(self.path, attempt)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.connections = 0  # accepted so far

        def accepted() -> None:
            with receiver._lock:
                receiver.connections += 1
                receiver._lock.notify_all()

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.on_connection = accepted
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait_for_connections(self, count: int, timeout: float = 10.0) -> int:
        """Block until `count` connections have been accepted; returns how many were."""
        with self._lock:
            self._lock.wait_for(lambda: self.connections >= count, timeout=timeout)
            return self.connections

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Block until `count` requests have arrived (joins, never sleeps on a guess)."""
        with self._lock:
            self._lock.wait_for(lambda: len(self.received) >= count, timeout=timeout)
            return list(self.received)

    def for_path(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def answering(status: int) -> tuple[Receiver, dict[str, int]]:
    """An endpoint that answers with `answers["status"]`, which the test may change as it goes;
    returns (the endpoint, answers). Stop the endpoint when done."""
    answers = {"status": status}
    return Receiver(responder=lambda path, n: (answers["status"], {})), answers
