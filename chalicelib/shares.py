"""An invocation's delivery threads shared out among destinations.

An SQS batch mixes the items of every destination due in the same second. Started first come,
first served, a destination whose calls hang would take every thread of the invocation for as
long as they hang, and the items of healthy destinations in the same batch would wait for them.
So one destination (its flow: see claims.Claimed) holds at most a share of the threads at once;
the rest of its items wait here, holding no thread, and start as its earlier calls end.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

from .claims import Claimed


def flow_of(item: Claimed) -> str:
    """What an item's share is counted under: its flow-control key, else its destination."""
    return f"flow:{item.flow}" if item.flow else item.dest


class SharedStarts:
    """Starts work on `pool`, at most `share` pieces of it per key at once (see the module)."""

    def __init__(self, pool: Executor, share: int) -> None:
        self._pool = pool
        self._share = share
        self._lock = threading.Lock()
        self._running: collections.Counter[str] = collections.Counter()
        self._waiting: dict[str, collections.deque[tuple[Future[Any], Callable[[], Any]]]] = {}

    def submit(self, key: str, work: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._running[key] >= self._share:
                self._waiting.setdefault(key, collections.deque()).append((future, work))
                return future
            self._running[key] += 1
        self._start(key, future, work)
        return future

    def _start(self, key: str, future: Future[Any], work: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                result = work()
            except BaseException as exc:  # handed to whoever waits on the future
                future.set_exception(exc)
            else:
                future.set_result(result)
            finally:
                self._next(key)

        self._pool.submit(run)

    def _next(self, key: str) -> None:
        """A piece of `key`'s work ended: start its next one on this same thread's pool."""
        with self._lock:
            waiting = self._waiting.get(key)
            if not waiting:
                self._running[key] -= 1
                return
            future, work = waiting.popleft()
        self._start(key, future, work)
