"""What the benchmarks share: the stack to measure, a fast webhook receiver, percentiles."""

from __future__ import annotations

import asyncio
import json
import math
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emulator.launcher import Stack  # noqa: E402  (the same launcher the e2e tests use)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(values_ms: list[float]) -> str:
    if not values_ms:
        return "no samples"
    return (f"p50 {percentile(values_ms, 50):.1f} ms, p99 {percentile(values_ms, 99):.1f} ms, "
            f"max {max(values_ms):.1f} ms")


@asynccontextmanager
async def running(rcv: AsyncReceiver, **settings: str) -> AsyncIterator[Stack]:
    """A fresh local stack (`make run`'s entry point) on free ports with its own Redis, and the
    receiver started; both are stopped however the benchmark ends.

    With AWS_ENDPOINT_URL set (a LocalStack), SQS is LocalStack's, on a queue of this run's own
    (emulator/launcher.py).
    """
    base = {"LOG_LEVEL": "WARNING", "API_PROCESSES": "2"}
    await rcv.start()
    try:
        stack = Stack(Path(tempfile.mkdtemp(prefix="punctual-bench-")), **{**base, **settings}).start()
        try:
            yield stack
        finally:
            stack.stop()
    finally:
        await rcv.stop()


@dataclass
class Arrival:
    path: str
    at: float
    body: dict[str, Any]


@dataclass
class AsyncReceiver:
    """An aiohttp webhook receiver on the benchmark's own event loop; records arrival times."""

    answer: Callable[[str, dict[str, Any]], int] = lambda path, body: 200
    # Seconds to hold each answer back, by path (an endpoint that answers slowly).
    delay: Callable[[str], float] = lambda path: 0.0
    arrivals: list[Arrival] = field(default_factory=list)
    port: int = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        at = time.time()
        body = json.loads(await request.read())
        self.arrivals.append(Arrival(request.path, at, body))
        if self.delay(request.path):
            await asyncio.sleep(self.delay(request.path))
        return web.Response(status=self.answer(request.path, body))

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            await asyncio.sleep(0.05)
        return predicate()


def iso(ts: float) -> str:
    ms = round(ts * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
