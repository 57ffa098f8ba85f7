"""Thread pools: each Lambda container's own, their threads started ahead of the work they are for."""

from __future__ import annotations

import contextvars
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


class ContainerPools:
    """A Lambda container's thread pools, by name: each built on first use, its threads started
    then (see prestart), and kept for the container's later invocations.

    On Lambda a container is a process that runs one invocation at a time, so one set per process
    is one set per invocation. A host that runs several invocations at once in one process gives
    each of them a set of its own (`enter`), so that one invocation's slow calls cannot take the
    threads another one needs, as they cannot across containers.
    """

    def __init__(self) -> None:
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._lock = threading.Lock()

    def get(self, name: str, size: int) -> ThreadPoolExecutor:
        with self._lock:
            pool = self._pools.get(name)
            fresh = pool is None
            if pool is None:
                # The pool's own threads belong to the same container, for what they submit.
                pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix=name, initializer=self.enter)
                self._pools[name] = pool
        if fresh:
            prestart(pool, size)
        return pool

    def enter(self) -> None:
        """Make these the pools of the calling thread (and of the pool threads it starts)."""
        _current.set(self)

    def shutdown(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.shutdown(wait=False)


# A new thread starts with an empty context, so a thread that never entered a container's pools
# uses the process's.
_current: contextvars.ContextVar[ContainerPools | None] = contextvars.ContextVar("container_pools",
                                                                                 default=None)
_process = ContainerPools()


def pool(name: str, size: int) -> ThreadPoolExecutor:
    """The calling container's pool `name` of `size` threads."""
    return (_current.get() or _process).get(name, size)
