"""The Redis layer for webhook messages and the shared due/inflight indexes.

Every change that touches more than one key runs as a Lua script from lua/.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, TypeVar

import redis

from .attempt_log import ATTEMPT_LOG_SIZE, Attempt, encode_log
from .claims import Claimed, Created, Retry, WayIn, message_ref, new_token
from .config import Settings
from .destinations import Destination, Health
from .errors import BadRequest, Conflict, NotFound
from .keys import Keys
from .messages import Message, NewMessage
from .redis_client import storage_errors
from .script_calls import (
    AskSweep,
    BeginDelivery,
    ClaimDue,
    CreateMessage,
    DeleteMessage,
    FinishDelivery,
    HandOn,
    PageAfter,
    Reclaim,
)
from .scripts import Refusals, ScriptCall, Scripts, hash_of, refuse
from .stats import STATS_TTL_SECONDS, attempt_field
from .targets import destination

T = TypeVar("T")

DELETE_REFUSALS: Refusals = {
    0: (NotFound, "message {message_id!r} not found"),
    -1: (Conflict, "message {message_id!r} is being delivered right now and cannot be deleted"),
}


class Waiting(StrEnum):
    WAITING = "waiting"  # begin_delivery.lua's answer when the destination's calls are all taken


WAITING = Waiting.WAITING


@dataclass(frozen=True)
class Postponed:
    """A claim its flow holds back (paused, or over its rate): sent on in its place, due when
    the flow lets it start. No attempt was spent."""

    claim: Claimed


@dataclass(frozen=True)
class BreakerOpen:
    """A message claimed while its destination's breaker is open: its attempt is spent without
    a call, and recorded so; a probe may go from `probe_at_ms`."""

    message: Message
    probe_at_ms: int


@dataclass(frozen=True)
class Finished:
    recorded: bool  # False: the claim was lost (its lease expired, or the message was deleted)
    handed_on: list[Claimed]  # a claim that waited for the destination's call, to deliver next


@dataclass(frozen=True)
class Page:
    items: list[tuple[str, int]]  # (member, score): (id, due ms) for the pending messages
    total: int
    next_cursor: str | None


def encode_cursor(score: int, member: str) -> str:
    raw = json.dumps([score, member], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _calls_limit(claimed: Claimed, max_calls: int) -> int:
    """The per-destination limit a claim is held to: none for a claim that names no destination
    (an agent run's, or one sent before destinations were counted)."""
    return max_calls if claimed.dest else 0


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        score, member = json.loads(raw)
        # Scores are epoch ms; a bigger number is no cursor of ours (and Redis would refuse it).
        # bool is an int to Python, but redis-py refuses it: [true, "x"] would be a 500.
        ours = isinstance(score, int) and not isinstance(score, bool) and abs(score) < 2**53
        if ours and isinstance(member, str):
            member.encode("utf-8")  # a lone surrogate ("\ud800") is no member of ours either
            return score, member
    except (ValueError, TypeError, RecursionError):
        pass
    raise BadRequest("cursor is not valid; pass the nextCursor of a previous page")


class Store:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self.scripts = Scripts(client)

    def call(self, fn: Callable[[], T]) -> T:
        """Run a Redis operation; a lost connection or a cluster still failing over once the
        client's retries are spent is a 503, not a 500; so is a Redis out of memory."""
        with storage_errors():
            return fn()

    def script(self, call: ScriptCall) -> Any:
        """Run one Lua script call (a lost connection is a 503, as in `call`)."""
        return self.call(lambda: self.scripts.call(call))

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def oldest_due_ms(self) -> int | None:
        """The earliest due time of anything not yet done: a waiting item or an unfinished message.

        Agent runs waiting for a concurrency slot are not counted: they wait by design.
        """
        def read() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.zrange(self.keys.due, 0, 0, withscores=True)
            pipe.zrange(self.keys.pending_messages, 0, 0, withscores=True)
            return pipe.execute()

        firsts = [int(rows[0][1]) for rows in self.call(read) if rows]
        return min(firsts) if firsts else None

    # -- messages -------------------------------------------------------

    def create_message(
        self, new: NewMessage, now_ms: int, way_in: WayIn, claim_token: str, inflight_deadline_ms: int,
        marker_ttl_ms: int, replay: Attempt | None = None,
    ) -> Created:
        """Store a message and set it on its way to SQS as `way_in` says (see create_message.lua);
        with `replay`, set a finished message on its way again (its record stays)."""
        k = self.keys
        created = Created(int(self.script(CreateMessage(
            message_key=k.message(new.id), pending_messages_key=k.pending_messages, due_key=k.due,
            inflight_key=k.inflight, sweep_key=k.sweep(new.due_ms), failed_messages_key=k.failed_messages,
            message_counts_key=k.message_counts, message_id=new.id,
            webhook_url=new.webhook_url, payload_json=new.payload_json, due_ms=new.due_ms, now_ms=now_ms,
            message_ref=message_ref(new.id), mode=way_in.value, claim_token=claim_token,
            inflight_deadline_ms=inflight_deadline_ms, marker_ttl_ms=marker_ttl_ms,
            replay_entry=replay.encode() if replay else "", attempt_log_size=ATTEMPT_LOG_SIZE,
            fields=new.stored_fields(),
        ))))
        if created is Created.MISSING:
            raise NotFound(f"message {new.id!r} not found")
        if created is Created.TAKEN and replay:
            raise Conflict(f"message {new.id!r} is not finished yet (it is pending); only a delivered or "
                           "failed message can be replayed")
        if created is Created.TAKEN:
            raise Conflict(f"message {new.id!r} already exists and is not delivered yet")
        return created

    def ask_sweep(self, second_ms: int, marker_ttl_ms: int) -> str:
        """For an item indexed in a due second the last tick already covered: "ask" (send the
        sweep of that second), "pending" (a sweep is on its way) or "swept" (claim it now)."""
        return str(self.script(AskSweep(sweep_key=self.keys.sweep(second_ms), marker_ttl_ms=marker_ttl_ms)))

    def sweep_marker_lost(self, second_ms: int) -> None:
        """The sweep of a second could not be sent: the next message of that second asks again."""
        self.call(lambda: self.client.delete(self.keys.sweep(second_ms)))

    def mark_swept(self, second_ms: int, ttl_ms: int) -> None:
        """From now on, messages of this second are claimed as they are created."""
        self.call(lambda: self.client.set(self.keys.sweep(second_ms), "swept", px=max(1, ttl_ms)))

    def get_message(self, message_id: str) -> Message:
        fields = self.call(lambda: self.client.hgetall(self.keys.message(message_id)))
        if not fields:
            raise NotFound(f"message {message_id!r} not found")
        return Message.from_hash(fields)

    def delete_message(self, message_id: str) -> None:
        k = self.keys
        result = self.script(DeleteMessage(
            message_key=k.message(message_id), pending_messages_key=k.pending_messages, due_key=k.due,
            inflight_key=k.inflight, failed_messages_key=k.failed_messages,
            message_counts_key=k.message_counts, message_id=message_id, message_ref=message_ref(message_id),
        ))
        refuse(DELETE_REFUSALS, result, message_id=message_id)

    def page_pending(self, limit: int, cursor: str | None) -> Page:
        return self.page(self.keys.pending_messages, limit, cursor)

    def page(self, key: str, limit: int, cursor: str | None) -> Page:
        """One page of a zset in score order, after an opaque cursor."""

        def read() -> tuple[list[Any], int]:
            if cursor is None:
                rows = self.client.zrange(key, 0, limit - 1, withscores=True)
                flat = [x for row in rows for x in row]
            else:
                score, member = decode_cursor(cursor)
                flat = self.scripts.call(PageAfter(zset_key=key, cursor_score=score, cursor_member=member,
                                                   page_size=limit))
            return flat, int(self.client.zcard(key))

        flat, total = self.call(read)
        items = [(flat[i], int(float(flat[i + 1]))) for i in range(0, len(flat), 2)]
        next_cursor = encode_cursor(items[-1][1], items[-1][0]) if len(items) == limit else None
        return Page(items=items, total=total, next_cursor=next_cursor)

    def webhook_urls(self, refs: list[str]) -> list[str]:
        """The target URL of each message named (those gone are left out), in one round trip."""

        def read() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for ref in refs:
                pipe.hget(self.keys.item(ref), "url")
            return pipe.execute()

        return [url for url in (self.call(read) if refs else []) if url]

    def begin_delivery(
        self, claimed: Claimed, lease_deadline_ms: int, now_ms: int, max_calls: int, grace_ms: int
    ) -> Message | Waiting | Postponed | BreakerOpen | None:
        """Claim a queued message for its delivery (None: nothing to claim). What its flow or its
        destination holds back comes back as such (see begin_delivery.lua): WAITING for a call
        to its flow (in Redis, handed on by the call that ends next), Postponed to when its flow
        lets it start, or BreakerOpen (claimed, its attempt spent without a call)."""
        k = self.keys
        flow = k.flow(claimed.dest, claimed.flow)
        limit = _calls_limit(claimed, max_calls)
        postpone_token = new_token()
        answer = self.script(BeginDelivery(
            message_key=k.item(claimed.ref), inflight_key=k.inflight, calls_key=flow.calls,
            waiting_key=flow.waiting, state_key=flow.state, breaker_key=k.breaker(claimed.dest),
            message_counts_key=k.message_counts, message_ref=claimed.ref, claim_token=claimed.token,
            lease_deadline_ms=lease_deadline_ms,
            # The body is kept only by a claim that waits, which only one to a destination may.
            now_ms=now_ms, max_calls=limit, claim_body=claimed.to_body() if claimed.dest else "",
            due_ms=claimed.due_ms, postpone_token=postpone_token, grace_ms=grace_ms,
            known_destination="1" if claimed.dest else "",
        ))
        if not answer:
            return None
        match answer[0]:
            case "go":
                return Message.from_hash(hash_of(answer[1]))
            case "waiting":
                return WAITING
            case "later":
                return Postponed(replace(claimed, due_ms=int(answer[1]), token=postpone_token))
            case "open":
                return BreakerOpen(Message.from_hash(hash_of(answer[2])), int(answer[1]))
        raise ValueError(f"begin_delivery.lua answered {answer!r}")

    def finish_delivery(
        self,
        message: Message,
        claimed: Claimed,
        outcome: str,
        now_ms: int,
        error: str | None,
        settings: Settings,
        *,
        health: Health,
        attempt: Attempt,
        lateness_ms: int | None = None,
        retry: Retry | None = None,
        pause_until_ms: int | None = None,
        took_call: bool = True,
    ) -> Finished:
        """Record an attempt's outcome (in its attempt log, and in this minute's stats with its
        call's lateness, None when no call was made), give back its call to its flow and count what
        the call said of its destination (`health`); a 429's Retry-After pauses the flow until
        `pause_until_ms`. A BreakerOpen attempt took no call (`took_call`)."""
        k = self.keys
        flow = k.flow(claimed.dest, claimed.flow)
        breaker = settings.breaker
        recorded, *handed_on = self.script(FinishDelivery(
            message_key=k.message(message.id), inflight_key=k.inflight,
            pending_messages_key=k.pending_messages, calls_key=flow.calls, waiting_key=flow.waiting,
            state_key=flow.state, breaker_key=k.breaker(claimed.dest), destinations_key=k.destinations,
            failed_messages_key=k.failed_messages, message_counts_key=k.message_counts,
            stats_minute_key=k.stats_minute(now_ms), message_ref=message_ref(message.id),
            claim_token=claimed.token, outcome=outcome, now_ms=now_ms,
            error_text=error or "", retention_seconds=settings.retention_seconds, message_id=message.id,
            retry_claim_token=retry.claim.token if retry else "",
            retry_due_ms=retry.claim.due_ms if retry else "",
            inflight_deadline_ms=retry.inflight_deadline_ms if retry else "",
            max_calls=_calls_limit(claimed, settings.destination_max_calls) if took_call else "",
            dest=claimed.dest, health=health.value if claimed.dest else "",
            pause_until_ms="" if pause_until_ms is None else pause_until_ms,
            breaker_threshold=breaker.failures, breaker_cooldown_ms=breaker.cooldown_ms,
            breaker_max_cooldown_ms=breaker.max_cooldown_ms,
            attempt_log=encode_log((*message.attempt_log, attempt)),
            stats_field=attempt_field(outcome, lateness_ms), stats_ttl_seconds=STATS_TTL_SECONDS,
        ))
        return Finished(bool(recorded), [Claimed.from_body(json.loads(body)) for body in handed_on])

    def hand_on(self, claimed: Claimed, now_ms: int, max_calls: int) -> list[Claimed]:
        """The claim waiting longest in `claimed`'s flow, if a call is free (see hand_on.lua)."""
        flow = self.keys.flow(claimed.dest, claimed.flow)
        bodies = self.script(HandOn(calls_key=flow.calls, waiting_key=flow.waiting, state_key=flow.state,
                                    now_ms=now_ms, max_calls=max_calls))
        return [Claimed.from_body(json.loads(body)) for body in bodies]

    def destinations(self, now_ms: int, limit: int) -> list[Destination]:
        """The destinations called in the last hour, the latest first."""
        k = self.keys

        def read() -> tuple[list[tuple[str, float]], list[Any]]:
            recent = self.client.zrevrange(k.destinations, 0, limit - 1, withscores=True)
            pipe = self.client.pipeline(transaction=False)
            for dest, _ in recent:
                flow = k.flow(dest)
                pipe.hgetall(k.breaker(dest))
                pipe.zcount(flow.calls, now_ms, "+inf")  # a call past its lease holds nothing
                pipe.zcard(flow.waiting)
                pipe.hget(flow.state, "pausedUntil")
            return recent, pipe.execute() if recent else []

        recent, rows = self.call(read)
        return [
            Destination(destination=dest, breaker=rows[4 * i], in_flight=int(rows[4 * i + 1]),
                        waiting=int(rows[4 * i + 2]),
                        paused_until_ms=int(rows[4 * i + 3]) if rows[4 * i + 3] else None,
                        last_active_minute_ms=int(score))
            for i, (dest, score) in enumerate(recent)
        ]

    # -- the due and inflight indexes ------------------------------------

    def claim_due(
        self, until_ms: int, grace_ms: int, batch: int, since_ms: int | None = None
    ) -> tuple[list[Claimed], bool]:
        """Claim up to `batch` items due at or before `until_ms` (and not before `since_ms`).

        Also says whether a full batch was read: then more may be due, even when fewer were
        claimed because a concurrent tick, sweep or schedule took some of them first. Every ref
        read leaves the due index either way, so a caller that goes on while it is told so ends.
        """
        k = self.keys
        since = "-inf" if since_ms is None else since_ms
        refs = self.call(
            lambda: self.client.zrangebyscore(k.due, since, until_ms, start=0, num=batch)
        )
        if not refs:
            return [], False
        flat = self.script(ClaimDue(
            due_key=k.due, inflight_key=k.inflight, message_counts_key=k.message_counts,
            item_keys=tuple(k.item(ref) for ref in refs), until_ms=until_ms, grace_ms=grace_ms,
            items=tuple((ref, new_token()) for ref in refs),
        ))
        claimed = [
            Claimed(ref=flat[i], due_ms=int(float(flat[i + 1])), token=flat[i + 2],
                    dest=destination(flat[i + 3]) if flat[i + 3] else "", flow=flat[i + 4])
            for i in range(0, len(flat), 5)
        ]
        return claimed, len(refs) == batch

    def expedite(self, items: list[Claimed], now_ms: int) -> None:
        """Make items whose SQS send failed reclaimable by the next tick."""
        refs = {item.ref: now_ms for item in items}
        if refs:
            self.call(lambda: self.client.zadd(self.keys.inflight, refs, xx=True))

    def reclaim_expired(self, now_ms: int, batch: int) -> tuple[int, bool]:
        """Put items whose SQS message or delivery lease was lost back in the due index; also
        says whether a full batch was read (more may be expired: see claim_due)."""
        k = self.keys
        refs = self.call(
            lambda: self.client.zrangebyscore(k.inflight, "-inf", now_ms, start=0, num=batch)
        )
        if not refs:
            return 0, False
        count = self.script(Reclaim(
            inflight_key=k.inflight, due_key=k.due, message_counts_key=k.message_counts,
            item_keys=tuple(k.item(ref) for ref in refs), now_ms=now_ms, refs=tuple(refs),
        ))
        return int(count), len(refs) == batch

