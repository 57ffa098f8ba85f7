"""The webhook message: its states, its stored form and how the API shows it."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .attempt_log import Attempt, decode_log
from .errors import BadRequest, PayloadTooLarge
from .flow_control import FlowControl
from .ids import check_id
from .standard_webhooks import secret_field
from .targets import Resolver, check_target_url, system_resolver
from .timeutil import format_instant, parse_instant

MAX_PAYLOAD_BYTES = 256 * 1024


class MessageStatus(StrEnum):
    SCHEDULED = "scheduled"  # waiting in the due index
    QUEUED = "queued"  # handed to SQS, waiting to be claimed (first try or retry)
    DELIVERING = "delivering"  # claimed by a dispatcher, POST under way
    DELIVERED = "delivered"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (MessageStatus.DELIVERED, MessageStatus.FAILED)


@dataclass(frozen=True)
class NewMessage:
    id: str
    due_ms: int
    payload_json: str
    webhook_url: str
    flow_control: FlowControl | None = None
    # Signs this message's delivery instead of WEBHOOK_SECRET; write-only: never shown or logged.
    webhook_secret: str | None = field(default=None, repr=False)

    def stored_fields(self) -> tuple[tuple[str, str], ...]:
        """Its optional hash fields, as create_message.lua stores them."""
        flow = self.flow_control.to_hash() if self.flow_control else ()
        return (*flow, *((("secret", self.webhook_secret),) if self.webhook_secret else ()))


@dataclass(frozen=True)
class Message:
    id: str
    due_ms: int
    webhook_url: str
    payload_json: str
    status: MessageStatus
    attempts: int
    created_ms: int
    last_error: str | None = None
    next_attempt_ms: int | None = None
    finished_ms: int | None = None
    flow_control: FlowControl | None = None
    webhook_secret: str | None = field(default=None, repr=False)  # its own, else WEBHOOK_SECRET's
    attempt_log: tuple[Attempt, ...] = ()  # the last tries, oldest first (attempt_log.py)

    @classmethod
    def from_hash(cls, fields: Mapping[str, str]) -> Message:
        def optional_int(name: str) -> int | None:
            value = fields.get(name)
            return int(value) if value else None

        return cls(
            id=fields["id"],
            due_ms=int(fields["due"]),
            webhook_url=fields["url"],
            payload_json=fields["payload"],
            status=MessageStatus(fields["status"]),
            attempts=int(fields.get("attempts") or 0),
            created_ms=int(fields["createdAt"]),
            last_error=fields.get("lastError") or None,
            next_attempt_ms=optional_int("nextAttemptAt"),
            finished_ms=optional_int("finishedAt"),
            flow_control=FlowControl.from_hash(fields),
            webhook_secret=fields.get("secret") or None,
            attempt_log=decode_log(fields.get("attemptLog")),
        )

    def replayed(self, due_ms: int) -> NewMessage:
        """This message, due again at `due_ms` (a replay keeps its stored record)."""
        return NewMessage(id=self.id, due_ms=due_ms, payload_json=self.payload_json,
                          webhook_url=self.webhook_url, flow_control=self.flow_control)

    def to_dict(self) -> dict[str, Any]:
        delivered = self.status is MessageStatus.DELIVERED
        shown = {
            "messageId": self.id,
            "status": self.status.value,
            "scheduleTo": format_instant(self.due_ms),
            "webhookUrl": self.webhook_url,
            "payload": json.loads(self.payload_json),
            "attempts": self.attempts,
            "lastError": self.last_error,
            "nextAttemptAt": None if self.status.finished else format_instant(self.next_attempt_ms),
            "deliveredAt": format_instant(self.finished_ms) if delivered else None,
            "failedAt": format_instant(self.finished_ms) if self.status is MessageStatus.FAILED else None,
            "createdAt": format_instant(self.created_ms),
            "attemptLog": [attempt.to_dict() for attempt in self.attempt_log],
        }
        if self.flow_control is not None:
            shown["flowControl"] = self.flow_control.to_dict()
        return shown


def _refuse_constant(name: str) -> object:
    # NaN and Infinity are not JSON; a receiver's parser would choke on them.
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        # 1e400 is valid JSON but no double: it would be stored, and sent on, as Infinity.
        raise ValueError(f"the number {text} is out of range")
    return value


def parse_json_object(raw_body: bytes | None) -> dict[str, Any]:
    """Decode a request body that must be one JSON object."""
    if not raw_body:
        raise BadRequest("request body is empty; send a JSON object")
    try:
        body = json.loads(raw_body, parse_constant=_refuse_constant, parse_float=_finite)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
    try:
        # JSON's \ud800 escapes decode to lone surrogates, which no UTF-8 store or receiver takes.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("request body contains an unpaired UTF-16 surrogate (\\ud800-\\udfff)") from None
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
    return body


def parse_new_message(
    raw_body: bytes | None,
    *,
    allow_internal: bool,
    resolver: Resolver = system_resolver,
) -> NewMessage:
    body = parse_json_object(raw_body)
    missing = [name for name in ("id", "scheduleTo", "payload", "webhookUrl") if name not in body]
    if missing:
        raise BadRequest(f"missing required field(s): {', '.join(missing)}")
    message_id = check_id(body["id"])
    due_ms = parse_instant(body["scheduleTo"], "scheduleTo")
    payload = body["payload"]
    if not isinstance(payload, dict):
        raise BadRequest(f"payload must be a JSON object, got {type(payload).__name__}")
    payload_json = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    size = len(payload_json.encode("utf-8"))
    if size > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"payload is {size} bytes; the limit is {MAX_PAYLOAD_BYTES} bytes")
    url = check_target_url(
        body["webhookUrl"], "webhookUrl", allow_internal=allow_internal, resolver=resolver
    )
    flow = body.get("flowControl")
    # Not in the webhook spec: an extension, as the spec is silent on fields it does not name.
    secret = secret_field(body["webhookSecret"]) if body.get("webhookSecret") is not None else None
    return NewMessage(id=message_id, due_ms=due_ms, payload_json=payload_json, webhook_url=url,
                      flow_control=None if flow is None else FlowControl.parse(flow), webhook_secret=secret)
