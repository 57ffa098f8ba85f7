"""Run-state events. Every change of a run's or job's state is published here, once.

The WebSocket fan-out (live.WsPublisher) is the Publisher in production.
"""

from __future__ import annotations

from typing import Any, Protocol

from .clock import Clock
from .timeutil import format_instant


class Publisher(Protocol):
    def publish(self, event: str, agent_id: str | None, data: dict[str, Any]) -> None: ...

    def status_changed(self) -> None:
        """The scheduler's counts may have changed (publishers throttle what they send)."""


class Events:
    """Builds each event's payload exactly as the agent spec shows it."""

    def __init__(self, publisher: Publisher, clock: Clock) -> None:
        self._publisher = publisher
        self._clock = clock

    def _emit(self, event: str, agent_id: str, job_id: str, **fields: Any) -> None:
        data = {"agentId": agent_id, "jobId": job_id, **fields,
                "timestamp": format_instant(self._clock.now_ms())}
        self._publisher.publish(event, agent_id, data)

    def started(self, agent_id: str, job_id: str) -> None:
        self._emit("agent:started", agent_id, job_id, status="started")

    def progress(self, agent_id: str, job_id: str, report: dict[str, Any]) -> None:
        self._emit("agent:progress", agent_id, job_id, **report)

    def completed(self, agent_id: str, job_id: str, duration_ms: int) -> None:
        self._emit("agent:completed", agent_id, job_id, status="completed", duration=duration_ms)

    def failed(self, agent_id: str, job_id: str, error: str) -> None:
        self._emit("agent:failed", agent_id, job_id, status="failed", error=error)

    def paused(self, agent_id: str, job_id: str) -> None:
        self._emit("agent:paused", agent_id, job_id, status="paused")

    def resumed(self, agent_id: str, job_id: str) -> None:
        self._emit("agent:resumed", agent_id, job_id, status="resumed")

    def counts_changed(self) -> None:
        self._publisher.status_changed()
