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
        # Sleep coarsely, then spin the last couple of milliseconds: time.sleep
        # overshoots by up to a scheduler quantum, and deliveries are promised
        # to the millisecond.
        while True:
            remaining = when_ms / 1000 - time.time()
            if remaining <= 0:
                return
            if remaining > 0.003:
                time.sleep(remaining - 0.002)
            else:
                time.sleep(0)


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
