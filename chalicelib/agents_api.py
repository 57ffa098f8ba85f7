"""The agent scheduling REST API (spec: agent-scheduling-api.md), plus agent registration and runs."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from .agents import Agent, check_agent_id, parse_agent_fields, parse_schedule
from .errors import BadRequest, Conflict, NotFound
from .messages import parse_json_object
from .messages_api import page_size
from .runs import RunStatus
from .services import Services

MAX_RUNS_LISTED = 100

REPORT_TEXT_CHARS = 2000  # a progress message or a failure's error, as kept and shown
STEP_CHARS = 200


def ok(data: Any = None, message: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"success": True}
    if message is not None:
        body["message"] = message
    if data is not None:
        body["data"] = data
    return body


def _optional_object(raw_body: bytes | None) -> dict[str, Any]:
    return parse_json_object(raw_body) if raw_body and raw_body.strip() else {}


# -- agents ----------------------------------------------------------------------


def create_agent(svc: Services, raw_body: bytes | None) -> dict[str, Any]:
    body = parse_json_object(raw_body)
    agent_id = check_agent_id(body["id"]) if body.get("id") is not None else "agent_" + secrets.token_hex(6)
    fields = parse_agent_fields(
        body, creating=True, allow_internal=svc.settings.local_mode, resolver=svc.resolver
    )
    return ok(svc.agent_store.create(agent_id, fields, svc.clock.now_ms()).to_dict())


def list_agents(svc: Services, params: Mapping[str, str]) -> dict[str, Any]:
    page, agents = svc.agent_store.page(page_size(params), params.get("cursor") or None)
    return {**ok([a.to_dict() for a in agents]), "count": page.total, "nextCursor": page.next_cursor}


def agent_or_registered(svc: Services, agent_id: str) -> Agent:
    """The agent; one never registered is registered first when AGENT_ENDPOINT_TEMPLATE is set, so
    the spec's flow (schedule an agent, then watch it run) needs no registration step."""
    agent = svc.agent_store.find(agent_id)
    if agent is not None:
        return agent
    template = svc.settings.agent_endpoint_template
    try:
        check_agent_id(agent_id)
    except BadRequest as exc:  # no agent can have this id: it is not found, as ever
        raise NotFound(f"agent {agent_id!r} not found ({exc.message})") from None
    if template is None:
        raise NotFound(
            f"agent {agent_id!r} not found: register it first (POST /api/agents with its id, name and "
            "endpointUrl), or set AGENT_ENDPOINT_TEMPLATE (e.g. https://agents.internal/run/{agentId}) "
            "to register agents as they are first scheduled or run"
        )
    url = template.replace("{agentId}", quote(agent_id, safe=""))
    try:
        fields = parse_agent_fields({"name": agent_id, "endpointUrl": url}, creating=True,
                                    allow_internal=svc.settings.local_mode, resolver=svc.resolver)
    except BadRequest as exc:
        raise BadRequest(f"AGENT_ENDPOINT_TEMPLATE gives {url!r} for this agent: {exc.message}") from None
    try:
        return svc.agent_store.create(agent_id, fields, svc.clock.now_ms())
    except Conflict:  # registered by a concurrent request meanwhile
        return svc.agent_store.get(agent_id)


def get_agent(svc: Services, agent_id: str) -> dict[str, Any]:
    return ok(svc.agent_store.get(agent_id).to_dict())


def update_agent(svc: Services, agent_id: str, raw_body: bytes | None) -> dict[str, Any]:
    body = parse_json_object(raw_body)
    fields = parse_agent_fields(
        body, creating=False, allow_internal=svc.settings.local_mode, resolver=svc.resolver
    )
    if not fields:
        raise BadRequest("nothing to change: send name, endpointUrl, description, timezone, "
                         "timeoutSeconds or webhookSecret")
    now = svc.clock.now_ms()
    agent = svc.agent_store.update(agent_id, fields, now)
    # A schedule that follows the agent's zone has its next slot at a different instant now.
    moved = "timezone" in fields and agent.slot_run is not None and agent.follows_own_timezone
    next_ms = agent.next_slot(now) if moved else None
    if next_ms is not None:
        svc.agent_store.move_slot(agent, next_ms, now)
        svc.scheduler.admit_slot(next_ms)
        agent = svc.agent_store.get(agent_id)
    return ok(agent.to_dict())


def delete_agent(svc: Services, agent_id: str) -> dict[str, Any]:
    svc.agent_store.delete(agent_id)
    svc.events.counts_changed()  # its schedule, pause or waiting run may have gone with it
    return ok(message="Agent deleted successfully")


# -- schedules ---------------------------------------------------------------------


def schedule_agent(svc: Services, agent_id: str, raw_body: bytes | None) -> dict[str, Any]:
    request = parse_schedule(parse_json_object(raw_body))
    agent = agent_or_registered(svc, agent_id)
    next_ms = agent.first_slot(request, svc.clock.now_ms())
    svc.agent_store.set_schedule(agent, request, next_ms, svc.clock.now_ms())
    if request.enabled:
        svc.scheduler.admit_slot(next_ms)
    if agent.paused and request.enabled:
        # A new schedule replaces a paused one whole, pause and all: its subscribers are told it
        # runs again, as a resume tells them.
        svc.events.resumed(agent_id, agent.job_id)
    else:
        svc.events.counts_changed()
    return ok(svc.agent_store.get(agent_id).schedule_summary())


def get_schedule(svc: Services, agent_id: str) -> dict[str, Any]:
    agent = svc.agent_store.get(agent_id)
    # An agent without a schedule answers too, with scheduleEnabled false and nextRunAt null: the
    # spec's monitoring loop reads every listed agent's schedule this way.
    run = svc.run_store.get_run(agent.current_run) if agent.current_run else None
    return ok(agent.schedule_info(run))


def unschedule_agent(svc: Services, agent_id: str) -> dict[str, Any]:
    svc.agent_store.delete_schedule(agent_id, svc.clock.now_ms())
    svc.events.counts_changed()
    return ok(message="Agent unscheduled successfully")


def pause_job(svc: Services, agent_id: str, job_id: str) -> dict[str, Any]:
    svc.agent_store.pause(agent_id, job_id, svc.clock.now_ms())
    svc.events.paused(agent_id, job_id)  # tells scheduler subscribers too
    return ok({"agentId": agent_id, "jobId": job_id, "status": "paused"},
              f"Job {job_id} paused successfully")


def resume_job(svc: Services, agent_id: str, job_id: str) -> dict[str, Any]:
    agent = svc.agent_store.get(agent_id)
    next_ms = agent.next_slot(svc.clock.now_ms())
    if next_ms is None or agent.job_id != job_id:
        raise NotFound(f"no scheduled task {job_id!r} for agent {agent_id!r}")
    svc.agent_store.resume(agent_id, job_id, svc.clock.now_ms(), next_ms)
    svc.scheduler.admit_slot(next_ms)
    svc.events.resumed(agent_id, job_id)  # tells scheduler subscribers too
    resumed = svc.agent_store.get(agent_id)
    return ok({"agentId": agent_id, "jobId": job_id, "status": "resumed",
               "nextRunAt": resumed.schedule_summary()["nextRunAt"]},
              f"Job {job_id} resumed successfully")


def scheduler_status(svc: Services) -> dict[str, Any]:
    return ok(svc.agent_store.scheduler_stats(svc.settings.max_concurrent_agents, svc.clock.now_ms()))


def paused_jobs(svc: Services) -> dict[str, Any]:
    return ok(svc.agent_store.paused_jobs())


# -- runs ---------------------------------------------------------------------------


def run_now(svc: Services, agent_id: str) -> dict[str, Any]:
    agent_or_registered(svc, agent_id)
    run_id = svc.run_store.run_now(agent_id, svc.clock.now_ms())
    svc.events.counts_changed()
    svc.runner.start_waiting()
    run = svc.run_store.get_run(run_id)
    return ok(run.to_dict() if run else {"runId": run_id, "agentId": agent_id})


def list_runs(svc: Services, agent_id: str, params: Mapping[str, str]) -> dict[str, Any]:
    svc.agent_store.get(agent_id)
    limit = min(page_size(params), MAX_RUNS_LISTED)
    return ok([run.to_dict() for run in svc.run_store.recent_runs(agent_id, limit)])


def get_run(svc: Services, agent_id: str, run_id: str) -> dict[str, Any]:
    svc.agent_store.get(agent_id)  # 404 for a deleted agent: its runs linger only until they expire
    run = svc.run_store.get_run(run_id)
    if run is None or run.agent_id != agent_id or run.status is RunStatus.SCHEDULED:
        raise NotFound(f"run {run_id!r} of agent {agent_id!r} not found")
    return ok({**run.to_dict(), "attemptLog": [attempt.to_dict() for attempt in run.attempt_log]})


def _progress_report(body: Mapping[str, Any]) -> dict[str, Any]:
    progress = body.get("progress")
    if isinstance(progress, bool) or not isinstance(progress, (int, float)) or not 0 <= progress <= 100:
        raise BadRequest("progress must be a number from 0 to 100")
    report: dict[str, Any] = {"progress": progress}
    message = body.get("message")
    if message is not None and not isinstance(message, str):
        raise BadRequest("message must be a string")
    # Cut, not refused, as a failure's error is: the report still counts. Each progress report
    # is kept with the run and pushed to every subscriber in one WebSocket frame (API Gateway
    # takes frames up to 128 KB).
    report["message"] = None if message is None else message[:REPORT_TEXT_CHARS]
    step = body.get("currentStep")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (str, int))):
        raise BadRequest("currentStep must be a string or a whole number")
    report["currentStep"] = None if step is None else str(step)[:STEP_CHARS]
    total = body.get("totalSteps")
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 0):
        raise BadRequest("totalSteps must be a whole number of 0 or more")
    report["totalSteps"] = total
    return report


def report(svc: Services, agent_id: str, run_id: str, action: str, token: str,
           raw_body: bytes | None) -> dict[str, Any]:
    """An agent's report on its run, authorised by the run's callback token."""
    if action not in {"progress", "complete", "fail"}:
        raise NotFound(f"unknown report {action!r}; use progress, complete or fail")
    run = svc.run_store.authorise_report(agent_id, run_id, token)
    body = _optional_object(raw_body)
    if action == "progress":
        svc.runner.report_progress(run, token, _progress_report(body))
    elif action == "complete":
        svc.runner.report_complete(run, token)
    elif action == "fail":
        error = body.get("error")
        if not isinstance(error, str) or not error.strip():
            raise BadRequest("error is required: a string saying what went wrong")
        svc.runner.report_fail(run, token, error[:REPORT_TEXT_CHARS])
    return ok()
