"""The webhook scheduler's REST API (spec: webhook-scheduler-api.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import dead_letters, services, stats
from .errors import BadRequest, EvictingStorage, Unavailable
from .health import Report, refused, unreachable
from .http import token_matches
from .messages import parse_json_object, parse_new_message
from .services import Services
from .timeutil import format_instant, parse_instant

DEFAULT_PAGE = 100
MAX_PAGE = 1000


def create_message(svc: Services, raw_body: bytes | None) -> dict[str, Any]:
    new = parse_new_message(raw_body, allow_internal=svc.settings.local_mode, resolver=svc.resolver)
    svc.scheduler.admit(new)
    return {"status": "scheduled", "messageId": new.id}


def page_size(params: Mapping[str, str]) -> int:
    raw = params.get("limit")
    if raw is None:
        return DEFAULT_PAGE
    try:
        limit = int(raw)
    except ValueError:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_PAGE}, got {raw!r}") from None
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"limit must be from 1 to {MAX_PAGE}, got {limit}")
    return limit


def list_messages(svc: Services, params: Mapping[str, str]) -> dict[str, Any]:
    status = params.get("status", "pending")
    if status not in ("pending", "failed"):
        raise BadRequest(f"status must be pending (the default) or failed, got {status!r}")
    limit = page_size(params)
    cursor = params.get("cursor") or None
    if status == "failed":
        return list_failed(svc, limit, cursor)
    page = svc.message_store.page_pending(limit, cursor)
    return {
        "scheduledJobs": [
            {"messageId": message_id, "nextRun": format_instant(due_ms), "job": "deliver_webhook"}
            for message_id, due_ms in page.items
        ],
        "count": page.total,
        "nextCursor": page.next_cursor,
    }


def list_failed(svc: Services, limit: int, cursor: str | None) -> dict[str, Any]:
    """The dead-letter view: failed messages held for inspection, newest first."""
    page, shown = dead_letters.page_failed(svc.message_store, limit, cursor, svc.clock.now_ms(),
                                           svc.settings.retention_seconds)
    return {"failedMessages": [failed.to_dict() for failed in shown], "count": page.total,
            "nextCursor": page.next_cursor}


def replay_message(svc: Services, message_id: str, raw_body: bytes | None) -> dict[str, Any]:
    """Deliver a delivered or failed message again, now or at `scheduleTo`, under the same id."""
    body = parse_json_object(raw_body) if raw_body and raw_body.strip() else {}
    unknown = sorted(set(body) - {"scheduleTo"})
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}; a replay takes only scheduleTo")
    now = svc.clock.now_ms()
    # A time already past is now: the replay is delivered at once, and its lateness counts from now.
    due = max(now, parse_instant(body["scheduleTo"], "scheduleTo")) if "scheduleTo" in body else now
    message = svc.message_store.get_message(message_id)
    svc.scheduler.admit(message.replayed(due), replay=True)
    return {"status": "scheduled", "messageId": message_id, "scheduleTo": format_instant(due)}


def get_stats(svc: Services) -> dict[str, Any]:
    now = svc.clock.now_ms()
    body = stats.read(svc.message_store, now, svc.settings.retention_seconds)
    body["scheduler"] = svc.agent_store.scheduler_stats(svc.settings.max_concurrent_agents, now)
    return body


def get_message(svc: Services, message_id: str) -> dict[str, Any]:
    return svc.message_store.get_message(message_id).to_dict()


def delete_message(svc: Services, message_id: str) -> dict[str, Any]:
    svc.message_store.delete_message(message_id)
    return {"status": "deleted", "messageId": message_id}


def list_destinations(svc: Services, params: Mapping[str, str]) -> dict[str, Any]:
    """Each destination called in the last hour, the latest first: its circuit breaker, its
    calls under way and waiting, and its recent failure rate."""
    now = svc.clock.now_ms()
    found = svc.message_store.destinations(now, page_size(params))
    return {"destinations": [dest.to_dict(now) for dest in found], "count": len(found)}


def health(headers: Mapping[str, str]) -> Report:
    """GET /health, which the spec serves without a token: its fields for anyone (see health.py),
    the detail when the request carries the API token. A wrong token is not a 401 here: the
    route is public, the caller just gets the public answer."""
    detailed = token_matches(headers, services.settings().api_token)
    try:
        svc = services.get()
    except EvictingStorage as exc:
        report = refused(exc.message, exc.policy)
    except Unavailable:
        report = unreachable()
    else:
        report = svc.health.detail() if detailed else svc.health.public()
    return report if detailed else report.public
