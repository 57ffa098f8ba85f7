"""urllib3 connections whose answer must arrive, whole, before one deadline.

urllib3's `Timeout(total=…)` bounds the connect and then each socket read, not the request: an
endpoint that trickles its status line, headers or body a byte at a time, each within the read
timeout, holds a delivery thread for as long as it likes. Here every read of an answer waits at
most until the deadline of the call it belongs to, so a call takes at most its timeout in total.

The deadline is the calling thread's (a context variable set around the call): the thread that
sends a request is the one urllib3 reads its answer on.
"""

from __future__ import annotations

import contextvars
import io
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("http_deadline", default=None)


@contextmanager
def deadline(seconds: float) -> Iterator[float]:
    """Answers read inside this block arrive within `seconds` from now, or time out."""
    at = time.monotonic() + seconds
    token = _deadline.set(at)
    try:
        yield at
    finally:
        _deadline.reset(token)


def passed(at: float) -> bool:
    return time.monotonic() >= at


class _DeadlineSocket:
    """A socket seen through a deadline: each read waits at most until it. Only what reading an
    answer uses is overridden; everything else is the socket's own."""

    def __init__(self, sock: socket.socket, at: float) -> None:
        self._sock = sock
        self._at = at

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        left = self._at - time.monotonic()
        if left <= 0:
            raise TimeoutError("the call's deadline passed")
        own = self._sock.gettimeout()
        self._sock.settimeout(left if own is None else min(own, left))
        try:
            return self._sock.recv_into(buffer, nbytes, flags)
        finally:
            self._sock.settimeout(own)

    def makefile(self, mode: str = "r", buffering: int | None = None, **_: Any) -> io.BufferedReader:
        # As socket.makefile("rb") does, over this object, so every read goes through recv_into.
        if mode != "rb":
            raise ValueError(f"only 'rb' is supported, got {mode!r}")
        raw = socket.SocketIO(self, "rb")  # type: ignore[arg-type]
        self._sock._io_refs += 1  # type: ignore[attr-defined]  # SocketIO.close gives it back
        return io.BufferedReader(raw, buffering if buffering and buffering > 0 else io.DEFAULT_BUFFER_SIZE)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _DeadlineMixin:
    sock: Any

    def getresponse(self) -> Any:
        at = _deadline.get()
        if at is None or self.sock is None:
            return super().getresponse()  # type: ignore[misc]
        own = self.sock
        self.sock = _DeadlineSocket(own, at)
        try:
            return super().getresponse()  # type: ignore[misc]
        finally:
            # An answer that ends the connection (`Connection: close`, HTTP/1.0) has http.client
            # close the socket and forget it: it must stay forgotten, or the pool would take the
            # closed socket for a live connection and fail the next call made on it.
            if self.sock is not None:
                self.sock = own


class DeadlineHTTPConnection(_DeadlineMixin, HTTPConnection):
    pass


class DeadlineHTTPSConnection(_DeadlineMixin, HTTPSConnection):
    pass


class _DeadlineHTTPPool(HTTPConnectionPool):
    ConnectionCls = DeadlineHTTPConnection


class _DeadlineHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = DeadlineHTTPSConnection


def pool_manager(**kwargs: Any) -> urllib3.PoolManager:
    """A PoolManager whose connections honour `deadline`."""
    manager = urllib3.PoolManager(**kwargs)
    manager.pool_classes_by_scheme = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}
    return manager
