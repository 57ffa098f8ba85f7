"""The webhook scheduler's REST API (spec: webhook-scheduler-api.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import BadRequest
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


def health(svc: Services) -> tuple[dict[str, Any], int]:
    """Healthy when Redis answers and the dispatch queue is reachable; with how long the
    oldest item past its due time has waited (it grows when the tick or dispatch is stuck)."""
    redis_up = svc.message_store.ping()
    queue_up = svc.dispatch_queue.reachable()
    body: dict[str, Any] = {
        "status": "healthy" if redis_up and queue_up else "unhealthy",
        "redis": "connected" if redis_up else "disconnected",
        "queue": "reachable" if queue_up else "unreachable",
        "oldestOverdueMs": None,
    }
    if redis_up:
        oldest = svc.message_store.oldest_due_ms()
        now = svc.clock.now_ms()
        body["oldestOverdueMs"] = max(0, now - oldest) if oldest is not None else 0
    return body, 200 if redis_up and queue_up else 503
