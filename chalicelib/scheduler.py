"""The per-minute tick: claims what falls due within the window and hands it to SQS."""

from __future__ import annotations

import time
from dataclasses import dataclass

from . import observability
from .agent_runner import AgentRunner
from .clock import Clock
from .config import Settings
from .dispatch_queue import DispatchQueue
from .store import Claimed, Store

CLAIM_BATCH = 500


@dataclass(frozen=True)
class TickReport:
    reclaimed: int
    claimed: int
    send_failures: int
    handed_on: bool
    expired_runs: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "expiredRuns": self.expired_runs,
            "reclaimed": self.reclaimed,
            "claimed": self.claimed,
            "sendFailures": self.send_failures,
            "handedOn": self.handed_on,
        }


class Scheduler:
    def __init__(
        self,
        store: Store,
        queue: DispatchQueue,
        clock: Clock,
        settings: Settings,
        runs: AgentRunner,
        claim_batch: int = CLAIM_BATCH,
    ) -> None:
        self._store = store
        self._runs = runs
        self._batch = claim_batch
        self._queue = queue
        self._clock = clock
        self._settings = settings

    @property
    def window_ms(self) -> int:
        return self._settings.tick_window_seconds * 1000

    @property
    def grace_ms(self) -> int:
        return self._settings.queue_grace_seconds * 1000

    def hand_to_queue(self, items: list[Claimed]) -> int:
        """Send claimed items to SQS; a failed send is left for the next tick to reclaim."""
        failed = self._queue.send(items)
        if failed:
            self._store.expedite(failed, self._clock.now_ms())
        return len(failed)

    def tick(self, deadline_ms: int) -> TickReport:
        """Claim everything due before now + window, stopping at `deadline_ms`.

        What is left when time runs out is handed on to a dispatcher through
        the queue instead of running past the Lambda's timeout.
        """
        started = time.perf_counter()
        report = self._tick(deadline_ms)
        observability.tick(report.to_dict(), (time.perf_counter() - started) * 1000)
        return report

    def _tick(self, deadline_ms: int) -> TickReport:
        now = self._clock.now_ms()
        expired = self._runs.heartbeat_and_expire(now)
        reclaimed = claimed = failures = 0
        while True:
            count = self._store.reclaim_expired(now, self._batch)
            reclaimed += count
            if count < self._batch or self._clock.now_ms() >= deadline_ms:
                break
        while self._clock.now_ms() < deadline_ms:
            batch = self._store.claim_due(now + self.window_ms, self.grace_ms, self._batch)
            claimed += len(batch)
            failed = self.hand_to_queue(batch) if batch else 0
            failures += failed
            if len(batch) < self._batch or failed:
                # Done, or SQS is failing: what it did not take is reclaimed next tick.
                return TickReport(reclaimed, claimed, failures, False, expired)
        return TickReport(reclaimed, claimed, failures, self._queue.send_control("tick"), expired)
