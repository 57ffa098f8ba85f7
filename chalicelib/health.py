"""GET /health: the spec's two fields for anyone, cheaply; the detail for the API token's holder.

The webhook spec serves /health without a token as `{"status": …, "redis": …}`. Anyone may
call it, so that body comes from a check at most PUBLIC_TTL_MS old, kept per container: a flood
of /health costs Redis and SQS one check per container and period, not one per request. With a
valid API token the answer adds the dispatch queue, the oldest overdue item, Redis's eviction
policy and the reason for an unhealthy status (naming any message shard that does not answer),
checked afresh.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from .clock import Clock
from .dispatch_queue import DispatchQueue
from .errors import Unavailable
from .redis_client import eviction_policies, eviction_problem, eviction_summary
from .store import Store

PUBLIC_TTL_MS = 2_000


@dataclass(frozen=True)
class Report:
    body: dict[str, Any]
    status: int

    @property
    def public(self) -> Report:
        """The spec's fields only."""
        return Report({"status": self.body["status"], "redis": self.body["redis"]}, self.status)


def _report(redis_up: bool, queue: str | None, oldest: int | None, policy: str | None,
            reasons: list[str]) -> Report:
    body: dict[str, Any] = {
        "status": "unhealthy" if reasons else "healthy",
        "redis": "connected" if redis_up else "disconnected",
        "queue": queue,
        "oldestOverdueMs": oldest,
        "evictionPolicy": policy,
    }
    if reasons:
        body["reason"] = "; ".join(reasons)
    return Report(body, 503 if reasons else 200)


def refused(reason: str, policy: str | None) -> Report:
    """Redis answers, but the services refused to start on it (an evicting policy)."""
    return _report(True, None, None, policy, [reason])


def unreachable() -> Report:
    """Redis did not answer when the services were built."""
    return _report(False, None, None, None, ["Redis does not answer"])


class HealthCheck:
    def __init__(self, store: Store, queue: DispatchQueue, clock: Clock) -> None:
        self._store = store
        self._queue = queue
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[int, Report] | None = None

    def detail(self) -> Report:
        """Checked now: Redis answers and keeps what it holds, the dispatch queue answers; with
        how long the oldest item past its due time has waited (it grows when the tick or
        dispatch is stuck)."""
        reasons: list[str] = []
        queue_up = self._queue.reachable()
        if not queue_up:
            reasons.append("the dispatch queue does not answer")
        policy = oldest = None
        redis_up = self._store.ping()
        if redis_up:
            try:
                policies = self._store.call(
                    lambda: eviction_policies(self._store.client, skip_unreachable=True))
            except Unavailable:
                redis_up = False  # it went away in the middle of the check
            else:
                policy = eviction_summary(policies)
                problem = eviction_problem(policies)
                if problem is not None:
                    reasons.append(problem)
                # Over every shard that answers; one that does not is named (shards.py).
                overdue = self._store.oldest_due()
                reasons += overdue.failed
                first_due = overdue.oldest_due_ms
                oldest = 0 if first_due is None else max(0, self._clock.now_ms() - first_due)
        if not redis_up:
            reasons.insert(0, "Redis does not answer")
        return _report(redis_up, "reachable" if queue_up else "unreachable", oldest, policy, reasons)

    def public(self) -> Report:
        """The spec's fields, from a check at most PUBLIC_TTL_MS old."""
        now = self._clock.now_ms()
        with self._lock:
            cached = self._cached
        if cached is not None and 0 <= now - cached[0] < PUBLIC_TTL_MS:
            return cached[1].public
        report = self.detail()
        with self._lock:
            self._cached = (now, report)
        return report.public
