"""Starting a thread pool's threads ahead of the work they are for."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

_started: set[int] = set()
_lock = threading.Lock()
# A barrier not met by then gives up: the pool is busy with real work, which started its threads.
_BARRIER_SECONDS = 2.0


def prestart(pool: ThreadPoolExecutor, threads: int) -> None:
    """Start `threads` threads in `pool` now, once per pool, without waiting for them.

    ThreadPoolExecutor starts a thread only when a task finds none idle, and each start waits
    until the new thread runs. When a minute's slots fall due together, that is one start per
    call, each a wait for the interpreter lock while every other thread wants it too: tens of
    milliseconds before the last call goes out. Started early (a batch arrives seconds before
    it is due), the threads are idle and waiting when the calls come.
    """
    with _lock:
        if id(pool) in _started:
            return
        _started.add(id(pool))
    # Each task waits until all have begun, so no thread takes two of them: `threads` threads.
    barrier = threading.Barrier(threads)

    def wait() -> None:
        try:
            barrier.wait(_BARRIER_SECONDS)
        except threading.BrokenBarrierError:
            pass

    for _ in range(threads):
        pool.submit(wait)
