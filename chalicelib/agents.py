"""Agents, their schedules and their runs: states, stored form, API shapes, input rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from . import cron
from .errors import BadRequest
from .ids import check_id
from .runs import Run, RunStatus
from .standard_webhooks import secret_field
from .targets import Resolver, check_target_url, system_resolver
from .timeutil import format_instant, stored_ms

RESERVED_IDS = {"schedule"}  # /api/agents/schedule/... is the scheduler's own path
MAX_TIMEOUT_SECONDS = 86_400
DEFAULT_TIMEOUT_SECONDS = 300


class Priority(IntEnum):
    LOW = 1
    NORMAL = 2
    HIGH = 3
    CRITICAL = 4


class AgentStatus(StrEnum):
    IDLE = "IDLE"
    RUNNING = "RUNNING"
    ERROR = "ERROR"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"


def check_agent_id(value: object) -> str:
    agent_id = check_id(value)
    if agent_id in RESERVED_IDS:
        raise BadRequest(f"id {agent_id!r} is reserved")
    return agent_id


def _text(body: Mapping[str, Any], name: str, limit: int, required: bool) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise BadRequest(f"{name} must be a {'non-empty ' if required else ''}string")
    if len(value) > limit:
        raise BadRequest(f"{name} must be at most {limit} characters")
    return value


def _timeout(body: Mapping[str, Any]) -> int | None:
    value = body.get("timeoutSeconds")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TIMEOUT_SECONDS:
        raise BadRequest(f"timeoutSeconds must be a whole number from 1 to {MAX_TIMEOUT_SECONDS}")
    return value


AGENT_FIELDS = {"id", "name", "endpointUrl", "description", "timezone", "timeoutSeconds", "webhookSecret"}


def parse_agent_fields(
    body: Mapping[str, Any], *, creating: bool, allow_internal: bool, resolver: Resolver = system_resolver
) -> dict[str, str]:
    """Validate the agent fields present in a create or update body; return them as hash fields."""
    unknown = sorted(set(body) - AGENT_FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    if not creating and "id" in body:
        raise BadRequest("id cannot be changed")
    fields: dict[str, str] = {}
    name = _text(body, "name", 200, required=creating or "name" in body)
    if name is not None:
        fields["name"] = name
    if creating or "endpointUrl" in body:
        fields["endpointUrl"] = check_target_url(
            body.get("endpointUrl"), "endpointUrl", allow_internal=allow_internal, resolver=resolver
        )
    description = _text(body, "description", 2000, required=False)
    if description is not None:
        fields["description"] = description
    if body.get("timezone") is not None:
        fields["timezone"] = cron.zone(body["timezone"]).key
    timeout = _timeout(body)
    if timeout is not None:
        fields["timeoutSeconds"] = str(timeout)
    if body.get("webhookSecret") is not None:
        fields["webhookSecret"] = secret_field(body["webhookSecret"])
    elif "webhookSecret" in body and not creating:
        fields["webhookSecret"] = ""  # null: back to WEBHOOK_SECRET
    return fields


@dataclass(frozen=True)
class ScheduleRequest:
    cron_expression: str
    priority: Priority
    enabled: bool
    timezone: str | None
    job_id: str | None


def parse_schedule(body: Mapping[str, Any]) -> ScheduleRequest:
    unknown = sorted(set(body) - {"cronExpression", "priority", "enabled", "timezone", "jobId"})
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    expression = cron.check_expression(body.get("cronExpression"))
    raw_priority = body.get("priority", "NORMAL")
    if not isinstance(raw_priority, str) or raw_priority.upper() not in Priority.__members__:
        raise BadRequest(f"priority must be one of LOW, NORMAL, HIGH, CRITICAL, got {raw_priority!r}")
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise BadRequest("enabled must be true or false")
    timezone = cron.zone(body["timezone"]).key if body.get("timezone") is not None else None
    job_id = check_id(body["jobId"], "jobId") if body.get("jobId") is not None else None
    return ScheduleRequest(expression, Priority[raw_priority.upper()], enabled, timezone, job_id)


def _slot(expression: str, timezone: str, after_ms: int) -> int:
    return cron.next_after(expression, cron.zone(timezone), after_ms)


@dataclass(frozen=True)
class Agent:
    """An agent hash as stored; schedule fields are empty when it has no schedule."""

    fields: Mapping[str, str] = field(repr=False)  # holds its webhookSecret

    @property
    def id(self) -> str:
        return self.fields["id"]

    @property
    def endpoint_url(self) -> str:
        return self.fields["endpointUrl"]

    @property
    def webhook_secret(self) -> str | None:
        """What signs its calls instead of WEBHOOK_SECRET; write-only: no API shape holds it."""
        return self.fields.get("webhookSecret") or None

    @property
    def cron(self) -> str | None:
        return self.fields.get("cron") or None

    @property
    def has_schedule(self) -> bool:
        return self.cron is not None

    @property
    def slot_run(self) -> str | None:
        """The run id of its pending cron slot."""
        return self.fields.get("slotRun") or None

    @property
    def current_run(self) -> str | None:
        """The run id of its run in progress (waiting, starting, running or between retries)."""
        return self.fields.get("currentRun") or None

    @property
    def paused(self) -> bool:
        return self.fields.get("paused") == "1"

    @property
    def job_id(self) -> str:
        return self.fields.get("jobId") or self.id

    @property
    def own_timezone(self) -> str:
        """The agent's own zone, which a schedule without a zone of its own follows."""
        return self.fields.get("timezone") or "UTC"

    @property
    def timezone(self) -> str:
        """The zone its schedule runs in."""
        return self.fields.get("scheduleTimezone") or self.own_timezone

    @property
    def follows_own_timezone(self) -> bool:
        return not self.fields.get("scheduleTimezone")

    def next_slot(self, after_ms: int) -> int | None:
        """The first slot of its schedule after `after_ms` (None: it has no schedule)."""
        return None if self.cron is None else _slot(self.cron, self.timezone, after_ms)

    def first_slot(self, schedule: ScheduleRequest, after_ms: int) -> int:
        """The first slot after `after_ms` of `schedule`, which is to replace its own."""
        return _slot(schedule.cron_expression, schedule.timezone or self.own_timezone, after_ms)

    @property
    def timeout_seconds(self) -> int:
        return int(self.fields.get("timeoutSeconds") or DEFAULT_TIMEOUT_SECONDS)

    @property
    def status(self) -> AgentStatus:
        return AgentStatus(self.fields.get("status") or AgentStatus.IDLE)

    def to_dict(self) -> dict[str, Any]:
        f = self.fields
        return {
            "id": self.id,
            "name": f.get("name"),
            "endpointUrl": f.get("endpointUrl"),
            "description": f.get("description") or None,
            "timezone": self.own_timezone,
            "timeoutSeconds": self.timeout_seconds,
            "status": self.status.value,
            "scheduleExpression": f.get("cron") or None,
            "scheduleEnabled": f.get("enabled") == "1",
            "nextRunAt": format_instant(stored_ms(f, "nextRunAt")),
            "lastRunAt": format_instant(stored_ms(f, "lastRunAt")),
            "createdAt": format_instant(stored_ms(f, "createdAt")),
            "updatedAt": format_instant(stored_ms(f, "updatedAt")),
        }

    def schedule_summary(self) -> dict[str, Any]:
        f = self.fields
        return {
            "id": self.id,
            "name": f.get("name"),
            "scheduleExpression": f.get("cron") or None,
            "scheduleEnabled": f.get("enabled") == "1",
            "nextRunAt": format_instant(stored_ms(f, "nextRunAt")),
        }

    def schedule_info(self, run: Run | None) -> dict[str, Any]:
        f = self.fields
        running = run is not None and run.status in {RunStatus.STARTING, RunStatus.RUNNING}
        return {
            **self.schedule_summary(),
            "lastRunAt": format_instant(stored_ms(f, "lastRunAt")),
            "status": self.status.value,
            "timezone": self.timezone,
            "taskDetails": {
                "agentId": self.id,
                "agentName": f.get("name"),
                "priority": int(f.get("priority") or Priority.NORMAL),
                "nextRunTime": format_instant(stored_ms(f, "nextRunAt")),
                "retryCount": int(f.get("retryCount") or 0),
                "lastError": f.get("lastError") or None,
                "backoffUntil": format_instant(stored_ms(f, "backoffUntil")),
                "isRunning": running,
                "isPaused": self.paused,
                "jobId": self.job_id,
            },
        }
