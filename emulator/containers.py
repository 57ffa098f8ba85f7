"""Lambda's concurrency model, in one worker process: a function's containers.

On AWS each concurrent invocation of a function runs in a container of its own, a process that
runs one invocation at a time with its own threads; a container is kept warm and reused. The
function's concurrency (its reserved concurrency, or the SQS event source's maximum concurrency)
caps how many run at once. Here a container is a thread that runs one invocation at a time, with
its own thread pools (chalicelib.threads.ContainerPools): the app's 64 delivery threads are one
invocation's, as on Lambda, so a batch whose calls hang holds only its own threads. Containers
are started as invocations need them, up to the limit, and the warmest idle one takes the next.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from chalicelib.threads import ContainerPools

from .lambda_runtime import LambdaContext

log = logging.getLogger("punctual.workers")

Handler = Callable[[dict[str, Any], Any], Any]
Done = Callable[[bool], None]

LAMBDA_TIMEOUT_MS = 60_000


class Container(threading.Thread):
    """One container: invocations one after another on this thread, with its own pools."""

    def __init__(self, name: str, handler: Handler, finished: Callable[[Container], None]) -> None:
        super().__init__(name=name, daemon=True)
        self.pools = ContainerPools()
        self._handler = handler
        self._finished = finished
        self._inbox: queue.SimpleQueue[tuple[dict[str, Any], Done]] = queue.SimpleQueue()

    def invoke(self, event: dict[str, Any], done: Done) -> None:
        self._inbox.put((event, done))

    def run(self) -> None:
        self.pools.enter()
        while True:
            event, done = self._inbox.get()
            ok = False
            try:
                self._handler(event, LambdaContext(budget_ms=LAMBDA_TIMEOUT_MS))
                ok = True
            except Exception:
                # Like Lambda: the batch stays, and comes back after the visibility timeout.
                log.exception("the %s handler failed; the batch will be received again", self.name)
            finally:
                done(ok)
                self._finished(self)


class Function:
    """A function's containers: up to `concurrency` invocations at once, each in a container."""

    def __init__(self, name: str, handler: Handler, concurrency: int) -> None:
        self.name = name
        self._handler = handler
        self._slots = threading.BoundedSemaphore(concurrency)
        self._idle: list[Container] = []  # the most recently used last: it is taken first
        self._started = 0
        self._running = 0
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        """An invocation is running (a poller merely waiting on a long poll is not)."""
        with self._lock:
            return self._running > 0

    @property
    def containers(self) -> int:
        """Containers started so far (each one's pools stay with it)."""
        with self._lock:
            return self._started

    def reserve(self, stopping: threading.Event) -> bool:
        """Wait for a free slot (a poller receives only what can run at once)."""
        while not stopping.is_set():
            if self._slots.acquire(timeout=0.5):
                return True
        return False

    def release(self) -> None:
        """Give back a reserved slot that no invocation used."""
        self._slots.release()

    def invoke(self, event: dict[str, Any], done: Done) -> None:
        """Run the handler on a reserved slot, in an idle container or a new one."""
        with self._lock:
            self._running += 1
            container = self._idle.pop() if self._idle else None
            if container is None:
                self._started += 1
                container = Container(f"{self.name}-{self._started}", self._handler, self._finished)
                container.start()
        container.invoke(event, done)

    def _finished(self, container: Container) -> None:
        with self._lock:
            self._running -= 1
            self._idle.append(container)
        self._slots.release()
