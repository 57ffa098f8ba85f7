"""Run-state events. Every change of a run's or job's state is published here, once.

The WebSocket fan-out (live.WsPublisher) is the Publisher in production.
Publishing is best-effort: an event is a notification about a state change
that is already recorded in Redis, so a publisher that fails (a Redis blip, a
boto error, a gone endpoint) is logged and never undoes or blocks the change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .clock import Clock
from .timeutil import format_instant

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Audience:
    """Who was subscribed when a state change was recorded, read by the script that recorded
    it: an event for no one then costs no round trip to Redis on the way to the agent's call."""

    agent: tuple[str, ...]  # connections subscribed to the agent (their records not yet checked)
    scheduler: bool  # anyone subscribed to scheduler updates


class Publisher(Protocol):
    def publish(
        self, event: str, agent_id: str | None, data: dict[str, Any], audience: Audience | None = None
    ) -> None: ...

    def status_changed(self, audience: Audience | None = None) -> None:
        """The scheduler's counts may have changed (publishers throttle what they send)."""

    def progress(self, agent_id: str, run_id: str, data: dict[str, Any]) -> None:
        """A run's agent:progress (publishers coalesce these per run: the last one wins)."""

    def run_ended(self, agent_id: str, run_id: str) -> None:
        """A run's attempt ended: a progress report still held goes out now, before its end."""


def best_effort(what: str, action: Callable[[], None]) -> None:
    """Run a publishing step; log its failure instead of raising it.

    The one place where publishing errors stop: callers are run execution,
    agents' callbacks and the dispatcher, none of which may fail because a
    subscriber could not be told.
    """
    try:
        action()
    except Exception:
        log.exception("could not publish %s; the state change itself is recorded", what)


class Events:
    """Builds each event's payload exactly as the agent spec shows it."""

    def __init__(self, publisher: Publisher, clock: Clock) -> None:
        self._publisher = publisher
        self._clock = clock

    def _data(self, agent_id: str, job_id: str, **fields: Any) -> dict[str, Any]:
        return {"agentId": agent_id, "jobId": job_id, **fields,
                "timestamp": format_instant(self._clock.now_ms())}

    def _emit(self, event: str, agent_id: str, job_id: str, audience: Audience | None = None,
              **fields: Any) -> None:
        def publish() -> None:
            self._publisher.publish(event, agent_id, self._data(agent_id, job_id, **fields), audience)

        best_effort(event, publish)

    def _ended(self, agent_id: str, run_id: str | None) -> None:
        if run_id is not None:
            best_effort("the last agent:progress", lambda: self._publisher.run_ended(agent_id, run_id))

    # A run starting, finishing or failing always moves runningAgentsCount (and a
    # failure that ends in ERROR moves scheduledTasksCount), so these events tell
    # scheduler subscribers too; the publisher throttles what it sends.

    def started(self, agent_id: str, job_id: str, audience: Audience | None = None) -> None:
        self._emit("agent:started", agent_id, job_id, audience, status="started")
        self.counts_changed(audience)

    def progress(self, agent_id: str, job_id: str, run_id: str, report: dict[str, Any]) -> None:
        best_effort("agent:progress", lambda: self._publisher.progress(
            agent_id, run_id, self._data(agent_id, job_id, **report)))

    def completed(self, agent_id: str, job_id: str, duration_ms: int, run_id: str | None = None) -> None:
        self._ended(agent_id, run_id)
        self._emit("agent:completed", agent_id, job_id, status="completed", duration=duration_ms)
        self.counts_changed()

    def failed(self, agent_id: str, job_id: str, error: str, run_id: str | None = None) -> None:
        self._ended(agent_id, run_id)
        self._emit("agent:failed", agent_id, job_id, status="failed", error=error)
        self.counts_changed()

    def paused(self, agent_id: str, job_id: str) -> None:
        self._emit("agent:paused", agent_id, job_id, status="paused")
        self.counts_changed()

    def resumed(self, agent_id: str, job_id: str) -> None:
        self._emit("agent:resumed", agent_id, job_id, status="resumed")
        self.counts_changed()

    def counts_changed(self, audience: Audience | None = None) -> None:
        """Runs were queued, started or finished, or schedules changed, outside the events above."""
        best_effort("scheduler:status", lambda: self._publisher.status_changed(audience))
