"""The outbound HTTP client against endpoints that answer slowly, a byte at a time."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from chalicelib.sender import HttpSender

TRICKLE_SECONDS = 0.1  # between two bytes of an answer
TIMEOUT = 0.5  # the call's, far below what the trickled answers take (3 s and more)


def read_request(conn: socket.socket) -> None:
    """Read one request's head (the tests' calls send no body worth reading)."""
    request = b""
    while b"\r\n\r\n" not in request:
        request += conn.recv(65536)


@dataclass
class Trickler:
    """An endpoint that reads a request, then sends `head` and `body` one byte at a time
    (after `head` at once when `fast_head`); records whether the caller hung up on it."""

    head: bytes
    body: bytes = b""
    fast_head: bool = False
    cut_off: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}/hook"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self._server.accept()
        with conn:
            read_request(conn)
            try:
                if self.fast_head:
                    conn.sendall(self.head)
                for byte in (self.body if self.fast_head else self.head + self.body):
                    conn.sendall(bytes([byte]))
                    time.sleep(TRICKLE_SECONDS)
                conn.recv(1)  # the caller hangs up, or sends its next request
            except OSError:
                self.cut_off.set()
            finally:
                self.done.set()

    def close(self) -> None:
        self._server.close()


@pytest.fixture
def trickler() -> Iterator[list[Trickler]]:
    made: list[Trickler] = []
    yield made
    for endpoint in made:
        endpoint.close()


def post(url: str) -> object:
    return HttpSender(TIMEOUT, allow_internal=True).post(url, b"{}", {}, "webhookUrl")


def test_an_answer_trickled_within_each_read_timeout_is_cut_at_the_call_s_deadline(
    trickler: list[Trickler],
) -> None:
    # Each byte comes well within the read timeout; the whole status line and headers take 3 s.
    endpoint = Trickler(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    trickler.append(endpoint)
    result = post(endpoint.url)
    assert result.ok is False and result.retryable is True  # type: ignore[attr-defined]
    assert result.error == f"timed out after {TIMEOUT:g} s"  # type: ignore[attr-defined]


def test_a_body_trickled_after_a_2xx_is_delivered_and_cut_off_at_the_deadline(
    trickler: list[Trickler],
) -> None:
    body = b"x" * 30  # 3 s at a byte each tenth of a second
    endpoint = Trickler(b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n", body, fast_head=True)
    trickler.append(endpoint)
    result = post(endpoint.url)
    assert result.ok is True  # type: ignore[attr-defined]  # the status said so
    # The sender hung up mid-body rather than reading on, and did not keep the connection.
    assert endpoint.done.wait(10) and endpoint.cut_off.is_set()


@contextmanager
def answering(answer: bytes, connections: int, calls_each: int) -> Iterator[tuple[str, list[int]]]:
    """An endpoint that accepts `connections` connections one after another and answers
    `calls_each` requests on each with `answer`; yields its URL and a list that grows by one for
    each request it read."""
    server = socket.create_server(("127.0.0.1", 0))
    hits: list[int] = []

    def serve() -> None:
        for _ in range(connections):
            conn, _ = server.accept()
            with conn:
                for _ in range(calls_each):
                    read_request(conn)
                    hits.append(1)
                    conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/hook", hits
    finally:
        server.close()


def test_a_prompt_answer_keeps_its_connection_for_the_next_call() -> None:
    sender = HttpSender(TIMEOUT, allow_internal=True)
    with answering(b"HTTP/1.1 204 No Content\r\n\r\n", connections=1, calls_each=2) as (url, hits):
        # Both calls on the one connection the server accepts: the deadline did not spoil it.
        assert sender.post(url, b"{}", {}, "webhookUrl").ok
        assert sender.post(url, b"{}", {}, "webhookUrl").ok
        assert len(hits) == 2


def test_an_endpoint_that_closes_each_connection_takes_every_call() -> None:
    """An answer with `Connection: close` ends its connection: the next call opens another one
    (it used to find the closed socket in the pool and fail with a ValueError)."""
    sender = HttpSender(TIMEOUT, allow_internal=True)
    closing = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    with answering(closing, connections=3, calls_each=1) as (url, hits):
        results = [sender.post(url, b"{}", {}, "webhookUrl") for _ in range(3)]
        assert [(r.ok, r.error) for r in results] == [(True, None)] * 3
        assert len(hits) == 3
