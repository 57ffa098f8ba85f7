"""The webhook scheduler's REST API (spec: webhook-scheduler-api.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import services
from .errors import BadRequest, EvictingStorage, Unavailable
from .health import Report, refused, unreachable
from .http import token_matches
from .messages import parse_new_message
from .services import Services
from .timeutil import format_instant

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
    limit = page_size(params)
    cursor = params.get("cursor") or None
    page = svc.message_store.page_pending(limit, cursor)
    return {
        "scheduledJobs": [
            {"messageId": message_id, "nextRun": format_instant(due_ms), "job": "deliver_webhook"}
            for message_id, due_ms in page.items
        ],
        "count": page.total,
        "nextCursor": page.next_cursor,
    }


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
