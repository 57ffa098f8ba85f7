"""Agent runs: their states, their stored form and how the API shows them."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .attempt_log import Attempt, decode_log
from .claims import run_ref
from .timeutil import format_instant, stored_ms


class RunStatus(StrEnum):
    SCHEDULED = "scheduled"  # a future cron slot in the due index
    QUEUED = "queued"  # in SQS: a slot about to fire, or a retry waiting out its backoff
    WAITING = "waiting"  # in the ready queue, for a free concurrency slot
    STARTING = "starting"  # given a slot, its start message in SQS
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"  # its slot came while the previous run was still going

    @property
    def finished(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.SKIPPED)


def new_run_id() -> str:
    return "run_" + secrets.token_hex(8)


@dataclass(frozen=True)
class Run:
    """A run hash as stored: one cron slot, manual run or retry of an agent."""

    id: str
    agent_id: str
    job_id: str
    trigger: str | None
    status: RunStatus
    attempt: int
    scheduled_ms: int | None
    started_ms: int | None
    finished_ms: int | None
    error: str | None
    progress_json: str | None
    token: str  # the claim token of the step under way ('' none)
    callback_token: str  # what the agent's reports on this attempt must carry ('' none)
    attempt_log: tuple[Attempt, ...] = ()  # the last attempts, oldest first (attempt_log.py)

    @classmethod
    def from_hash(cls, fields: Mapping[str, str]) -> Run:
        return cls(
            id=fields["runId"],
            agent_id=fields["agentId"],
            job_id=fields.get("jobId") or fields["agentId"],
            trigger=fields.get("trigger"),
            status=RunStatus(fields["status"]),
            attempt=int(fields.get("attempt") or 1),
            scheduled_ms=stored_ms(fields, "scheduledFor"),
            started_ms=stored_ms(fields, "startedAt"),
            finished_ms=stored_ms(fields, "finishedAt"),
            error=fields.get("error") or None,
            progress_json=fields.get("progress") or None,
            token=fields.get("token", ""),
            callback_token=fields.get("callbackToken", ""),
            attempt_log=decode_log(fields.get("attemptLog")),
        )

    @property
    def ref(self) -> str:
        return run_ref(self.agent_id, self.id)

    @property
    def lateness_ms(self) -> int | None:
        """How late this attempt started after it was due."""
        if self.started_ms is None or self.scheduled_ms is None:
            return None
        return self.started_ms - self.scheduled_ms

    def ran_for_ms(self, now_ms: int) -> int:
        """How long this attempt has run until `now_ms` (0 if it never started)."""
        return now_ms - (self.started_ms or now_ms)

    def to_dict(self) -> dict[str, Any]:
        started, finished = self.started_ms, self.finished_ms
        return {
            "runId": self.id,
            "agentId": self.agent_id,
            "jobId": self.job_id,
            "trigger": self.trigger,
            "status": self.status.value,
            "attempt": self.attempt,
            "scheduledFor": format_instant(self.scheduled_ms),
            "startedAt": format_instant(started),
            "finishedAt": format_instant(finished),
            "duration": finished - started if started and finished else None,
            "error": self.error,
            "progress": json.loads(self.progress_json) if self.progress_json else None,
        }
