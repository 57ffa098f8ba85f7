"""The one source of time. Handlers take `now` from here; tests replace it."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...

    def sleep_until(self, when_ms: int) -> None: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def sleep_until(self, when_ms: int) -> None:
        # time.sleep is clock_nanosleep on Linux: it wakes within tens of microseconds when a
        # core is free. Spinning out the last milliseconds instead held the cores when many
        # invocations wait for the same instant (a minute's cron slots), so the ones due woke late.
        while True:
            remaining = when_ms / 1000 - time.time()
            if remaining <= 0:
                return
            time.sleep(remaining)


class FakeClock:
    """A clock that only moves when told to; sleeping moves it."""

    def __init__(self, now_ms: int) -> None:
        self._now = now_ms
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        with self._lock:
            return self._now

    def set(self, now_ms: int) -> None:
        with self._lock:
            self._now = now_ms

    def advance(self, ms: int) -> None:
        with self._lock:
            self._now += ms

    def sleep_until(self, when_ms: int) -> None:
        with self._lock:
            self._now = max(self._now, when_ms)
