"""The Redis layer for webhook messages and the shared due/inflight indexes.

Every change that touches more than one key runs as a Lua script from lua/. Messages are spread
over shards (shards.py): each method finds a message's shard by its id, a claim's by the shard it
names, and reads what spans every shard (listings, counts, destinations) shard by shard.
"""

from __future__ import annotations

import base64
import heapq
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, TypeVar

import redis

from .attempt_log import ATTEMPT_LOG_SIZE, Attempt, encode_log
from .claims import Claimed, Created, Retry, WayIn, message_id_of, message_ref, new_token
from .config import Settings
from .destinations import Destination, Health
from .errors import BadRequest, Conflict, NotFound, PunctualError
from .keys import Keys
from .messages import Message, MessageStatus, NewMessage
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
from .scripts import Refusals, ScriptCall, Scripts, refuse
from .shards import HELD, Registry, Shards
from .stats import STATS_TTL_SECONDS, attempt_field
from .targets import destination

log = logging.getLogger(__name__)

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
    shards: list[Keys] | None = None  # the shard of each item


@dataclass(frozen=True)
class Overdue:
    """The earliest due time of anything not done yet, over the shards that answered."""

    oldest_due_ms: int | None
    failed: list[str]  # what each shard that did not answer said, naming it


def encode_cursor(score: int, member: str) -> str:
    raw = json.dumps([score, member], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# The status of a marker that holds a message's id in its id's home while the message is in the
# shard of its flow (Store.place).
ELSEWHERE = "elsewhere"
# delete_message.lua's answer for a marker: the message is in the shard it names.
MARKED = 2
# A marker whose message is not found holds its id this long all the same: the message may be
# on its way in.
MARKER_SETTLE_MS = 10_000


def flow_of(new: NewMessage) -> str:
    """What places a message with flow control (shards.py): its flow's key, else its destination."""
    if new.flow_control is None:
        return ""
    return f"key:{new.flow_control.key}" if new.flow_control.key else f"dest:{destination(new.webhook_url)}"


def create_call(
    new: NewMessage, k: Keys, now_ms: int, way_in: WayIn, claim_token: str, inflight_deadline_ms: int,
    marker_ttl_ms: int, replay: Attempt | None = None,
) -> CreateMessage:
    """The script call that stores a message in shard `k` (see Store.create_message)."""
    return CreateMessage(
        message_key=k.message(new.id), pending_messages_key=k.pending_messages, due_key=k.due,
        inflight_key=k.inflight, sweep_key=k.sweep(new.due_ms), failed_messages_key=k.failed_messages,
        message_counts_key=k.message_counts, message_id=new.id,
        webhook_url=new.webhook_url, payload_json=new.payload_json, due_ms=new.due_ms, now_ms=now_ms,
        message_ref=message_ref(new.id), mode=way_in.value, claim_token=claim_token,
        inflight_deadline_ms=inflight_deadline_ms, marker_ttl_ms=marker_ttl_ms,
        replay_entry=replay.encode() if replay else "", attempt_log_size=ATTEMPT_LOG_SIZE,
        fields=new.stored_fields(),
    )


# The message fields begin_delivery.lua answers, in its order: what a delivery reads.
DELIVERY_FIELDS = ("status", "token", "flowParallelism", "flowRate", "attempts", "due", "url", "payload",
                   "createdAt", "secret", "attemptLog", "flowKey", "lastError", "nextAttemptAt")


def _delivered_message(ref: str, values: list[str | None]) -> Message:
    """The message begin_delivery.lua claimed, from the values of its DELIVERY_FIELDS."""
    fields = {name: value for name, value in zip(DELIVERY_FIELDS, values, strict=True) if value is not None}
    return Message.from_hash({"id": message_id_of(ref), **fields})


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
    def __init__(
        self, client: redis.Redis, keys: Keys, shard_count: int = 1, retention_seconds: int = 0
    ) -> None:
        self.client = client
        self.keys = keys  # the bare head's: agents, runs, WebSocket state, the shard registry
        self.scripts = Scripts(client)
        self.shards = Shards(keys, shard_count, self.read_layouts, retention_seconds * 1000)
        self._registered = False

    def _calls_limit(self, claimed: Claimed, max_calls: int) -> int:
        """The per-destination limit a claim is held to: its shard's share of it (a message with
        flow control is held to its own, in its flow's one shard); none for a claim that names no
        destination (an agent run's, or one sent before destinations were counted)."""
        return self.shards.share(max_calls) if claimed.dest else 0

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

    def oldest_due(self) -> Overdue:
        """The earliest due time of anything not yet done, a waiting item or an unfinished
        message, in every shard; a shard that does not answer is named, the others still count.

        Agent runs waiting for a concurrency slot are not counted: they wait by design.
        """
        firsts: list[int] = []
        failed: list[str] = []
        for keys in self.shards.claimed():
            def read(keys: Keys = keys) -> list[Any]:
                pipe = self.client.pipeline(transaction=False)
                pipe.zrange(keys.due, 0, 0, withscores=True)
                pipe.zrange(keys.pending_messages, 0, 0, withscores=True)
                return pipe.execute()

            try:
                firsts += [int(rows[0][1]) for rows in self.call(read) if rows]
            except PunctualError as exc:
                failed.append(f"shard {keys.head} does not answer ({exc})")
        return Overdue(min(firsts) if firsts else None, failed)

    # -- the shard registry -----------------------------------------------

    def read_layouts(self) -> Registry:
        """The registry (shards.py): each layout used, HELD or the ms it was found empty."""
        raw = self.call(lambda: self.client.hgetall(self.keys.shards))
        return {int(count): state for count, state in raw.items()}

    def register_layout(self) -> None:
        """Note, once per process and before its first message, that this process puts new
        messages in the current layout, so that every process reads its shards. With no registry
        yet, one shard needs no note (it is the bare head's, which the tick always claims); more
        note the one-shard layout as well, for the messages stored before shards, to be drained."""
        if self._registered:
            return
        count = self.shards.current.count

        def register() -> None:
            if not self.client.exists(self.keys.shards):
                if count == 1:
                    return
                self.client.hsetnx(self.keys.shards, "1", HELD)
            self.client.hset(self.keys.shards, str(count), HELD)

        self.call(register)
        self._registered = True

    def note_layout(self, count: int, held: bool, now_ms: int) -> None:
        """Flag an older layout HELD, or empty since now unless it was already (the tick)."""
        def note() -> None:
            if held:
                self.client.hset(self.keys.shards, str(count), HELD)
            elif self.client.hget(self.keys.shards, str(count)) == HELD:
                self.client.hset(self.keys.shards, str(count), str(now_ms))

        self.call(note)

    def holds_messages(self, shards: Iterable[Keys]) -> bool:
        """Whether any of these shards still holds a pending or failed message."""
        def read() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for keys in shards:
                pipe.zcard(keys.pending_messages)
                pipe.zcard(keys.failed_messages)
            return pipe.execute()

        return any(int(count) for count in self.call(read))

    # -- messages -------------------------------------------------------

    def place(self, new: NewMessage, now_ms: int, replay: bool = False) -> Keys:
        """The shard a message goes to: a new one to its home (shards.py), a replay to where it
        is kept.

        Its id stays unique over the shards where a message of that id may be pending: its homes
        in older layouts still drained, and its id's own home when it goes by its flow, where a
        marker (`elsewhere`) then holds the id and points to it. One there and not finished holds
        the id: a 409, as in its home.
        """
        if replay:
            return self.locate(new.id)[0]
        self.register_layout()
        id_home = self.shards.home(new.id)
        home = self.shards.home(new.id, flow_of(new))
        others = self.shards.elsewhere(new.id)
        if others:
            statuses = self.call(lambda: [self.client.hget(keys.message(new.id), "status")
                                          for keys in others])
            if any(status and status != ELSEWHERE and not MessageStatus(status).finished
                   for status in statuses):
                raise Conflict(f"message {new.id!r} already exists and is not delivered yet")
        if home.shard != id_home.shard:
            self._point(new, id_home, home, now_ms)
        return home

    def _point(self, new: NewMessage, id_home: Keys, home: Keys, now_ms: int) -> None:
        """Hold `new`'s id in its id's home with a marker that points to `home`, where it goes by
        its flow. It lives as long as the message may: until its due time, a day of retries and
        postponements, and its retention."""
        marker = id_home.message(new.id)
        held = self.call(lambda: self.client.hmget(marker, "status", "shard", "at"))
        if held[0] is not None and not self._frees(new.id, held, now_ms):
            raise Conflict(f"message {new.id!r} already exists and is not delivered yet")
        ttl_ms = max(0, new.due_ms - now_ms) + 86_400_000 + self.shards.retention_ms

        def write() -> None:
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(marker)
            pipe.hset(marker, mapping={"status": ELSEWHERE, "shard": home.shard, "at": now_ms})
            pipe.pexpire(marker, ttl_ms)
            pipe.execute()

        self.call(write)

    def _frees(self, message_id: str, held: list[str | None], now_ms: int) -> bool:
        """Whether what holds an id in its home (status, shard, at) lets a new message take it:
        a finished message does; a marker does once the message it points to is finished or
        gone, and no sooner than MARKER_SETTLE_MS after it was set (its message may be on its
        way in)."""
        status, shard, at = held
        if status != ELSEWHERE:
            return status is not None and MessageStatus(status).finished
        if now_ms - int(at or 0) < MARKER_SETTLE_MS:
            return False
        pointed = self.shards.named(shard or "").message(message_id)
        there = self.call(lambda: self.client.hget(pointed, "status"))
        return there is None or MessageStatus(there).finished

    def create_message(
        self, new: NewMessage, keys: Keys, now_ms: int, way_in: WayIn, claim_token: str,
        inflight_deadline_ms: int, marker_ttl_ms: int, replay: Attempt | None = None,
    ) -> Created:
        """Store a message in shard `keys` (see `place`) and set it on its way to SQS as `way_in`
        says (see create_message.lua); with `replay`, set a finished message on its way again
        (its record stays)."""
        def create() -> Created:
            return Created(int(self.script(create_call(
                new, keys, now_ms, way_in, claim_token, inflight_deadline_ms, marker_ttl_ms, replay))))

        created = create()
        if created is Created.TAKEN and not replay and self._drop_marker(new.id, keys, now_ms):
            created = create()
        if created is Created.MISSING:
            raise NotFound(f"message {new.id!r} not found")
        if created is Created.TAKEN and replay:
            raise Conflict(f"message {new.id!r} is not finished yet (it is pending); only a delivered or "
                           "failed message can be replayed")
        if created is Created.TAKEN:
            raise Conflict(f"message {new.id!r} already exists and is not delivered yet")
        return created

    def _drop_marker(self, message_id: str, keys: Keys, now_ms: int) -> bool:
        """Drop a marker (see `place`) that holds an id in shard `keys` and no longer needs to."""
        held = self.call(lambda: self.client.hmget(keys.message(message_id), "status", "shard", "at"))
        if held[0] != ELSEWHERE or not self._frees(message_id, held, now_ms):
            return False
        self.call(lambda: self.client.delete(keys.message(message_id)))
        return True

    def ask_sweep(self, second_ms: int, marker_ttl_ms: int, keys: Keys | None = None) -> str:
        """For an item indexed in a due second the last tick already covered: "ask" (send the
        sweep of that second), "pending" (a sweep is on its way) or "swept" (claim it now).
        Sweeps are per shard; the bare head's (agent runs) by default."""
        k = keys or self.keys
        return str(self.script(AskSweep(sweep_key=k.sweep(second_ms), marker_ttl_ms=marker_ttl_ms)))

    def sweep_marker_lost(self, second_ms: int, keys: Keys) -> None:
        """The sweep of a second could not be sent: the next message of that second asks again."""
        self.call(lambda: self.client.delete(keys.sweep(second_ms)))

    def mark_swept(self, second_ms: int, ttl_ms: int, keys: Keys) -> None:
        """From now on, messages of this second are claimed as they are created."""
        self.call(lambda: self.client.set(keys.sweep(second_ms), "swept", px=max(1, ttl_ms)))

    def locate(self, message_id: str, now_ms: int | None = None) -> tuple[Keys, dict[str, str]]:
        """A message's shard and its hash: its home, else where an older layout kept it."""
        home = self.shards.home(message_id)
        fields = self.call(lambda: self.client.hgetall(home.message(message_id)))
        if fields.get("status") == ELSEWHERE:
            there = self.shards.named(fields.get("shard", ""))
            found = self.call(lambda: self.client.hgetall(there.message(message_id)))
            if found:
                return there, found
        elif fields:
            return home, fields
        for keys in self.shards.kept_elsewhere(message_id, _now_ms() if now_ms is None else now_ms):
            fields = self.call(lambda keys=keys: self.client.hgetall(keys.message(message_id)))
            if fields:
                return keys, fields
        raise NotFound(f"message {message_id!r} not found")

    def get_message(self, message_id: str) -> Message:
        return Message.from_hash(self.locate(message_id)[1])

    def delete_message(self, message_id: str) -> None:
        """Cancel a message, or forget a finished one: in its id's home, where it mostly is, in
        one call; through its marker, or in the shards `locate` would try next, when not."""
        home = self.shards.home(message_id)
        result = self._delete_in(home, message_id)
        if result == MARKED:  # in its flow's shard: its marker goes with it
            shard = self.call(lambda: self.client.hget(home.message(message_id), "shard"))
            result = self._delete_in(self.shards.named(shard or ""), message_id)
            if result == 1:
                self.call(lambda: self.client.delete(home.message(message_id)))
        if result in (0, MARKED):
            for keys in self.shards.kept_elsewhere(message_id, _now_ms()):
                result = self._delete_in(keys, message_id)
                if result not in (0, MARKED):
                    break
            else:
                result = 0
        refuse(DELETE_REFUSALS, result, message_id=message_id)

    def _delete_in(self, k: Keys, message_id: str) -> Any:
        return self.script(DeleteMessage(
            message_key=k.message(message_id), pending_messages_key=k.pending_messages, due_key=k.due,
            inflight_key=k.inflight, failed_messages_key=k.failed_messages,
            message_counts_key=k.message_counts, message_id=message_id, message_ref=message_ref(message_id),
        ))

    def page_pending(self, limit: int, cursor: str | None) -> Page:
        return self.page_shards(lambda keys: keys.pending_messages, limit, cursor)

    def page(self, key: str, limit: int, cursor: str | None) -> Page:
        """One page of a zset in score order, then member order (a zset's own), after an opaque
        cursor."""
        return self._page([(key, self.keys)], limit, cursor)

    def page_shards(self, index: Callable[[Keys], str], limit: int, cursor: str | None) -> Page:
        """One page of a zset every shard keeps (`index` names it), as `page` reads one.

        Each shard is read from the cursor on, and the reads are merged. The cursor is the last
        item's (score, member): the same position in every shard, since ids are unique over all
        of them, so it stays exact while items come and go in any shard.
        """
        return self._page([(index(keys), keys) for keys in self.shards.listed()], limit, cursor)

    def _page(self, zsets: list[tuple[str, Keys]], limit: int, cursor: str | None) -> Page:
        after = decode_cursor(cursor) if cursor is not None else None

        def read(key: str) -> tuple[list[Any], int]:
            if after is None:
                rows = self.client.zrange(key, 0, limit - 1, withscores=True)
                flat = [x for row in rows for x in row]
            else:
                flat = self.scripts.call(PageAfter(zset_key=key, cursor_score=after[0],
                                                   cursor_member=after[1], page_size=limit))
            return flat, int(self.client.zcard(key))

        reads = [self.call(lambda key=key: read(key)) for key, _ in zsets]
        merged = heapq.merge(*(
            [(int(float(flat[i + 1])), flat[i], keys) for i in range(0, len(flat), 2)]
            for (flat, _), (_, keys) in zip(reads, zsets, strict=True)
        ), key=lambda row: (row[0], row[1].encode()))
        rows = list(merged)[:limit]
        items = [(member, score) for score, member, _ in rows]
        next_cursor = encode_cursor(items[-1][1], items[-1][0]) if len(items) == limit else None
        return Page(items=items, total=sum(total for _, total in reads), next_cursor=next_cursor,
                    shards=[keys for _, _, keys in rows])

    def webhook_urls(self, claims: list[Claimed]) -> list[str]:
        """The target URL of each message claimed (those gone are left out), in one round trip."""

        def read() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for claimed in claims:
                pipe.hget(self.shards.named(claimed.shard).item(claimed.ref), "url")
            return pipe.execute()

        return [url for url in (self.call(read) if claims else []) if url]

    def begin_delivery(
        self, claimed: Claimed, lease_deadline_ms: int, now_ms: int, max_calls: int, grace_ms: int
    ) -> Message | Waiting | Postponed | BreakerOpen | None:
        """Claim a queued message for its delivery (None: nothing to claim). What its flow or its
        destination holds back comes back as such (see begin_delivery.lua): WAITING for a call
        to its flow (in Redis, handed on by the call that ends next), Postponed to when its flow
        lets it start, or BreakerOpen (claimed, its attempt spent without a call)."""
        k = self.shards.named(claimed.shard)
        flow = k.flow(claimed.dest, claimed.flow)
        limit = self._calls_limit(claimed, max_calls)
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
                return _delivered_message(claimed.ref, answer[1])
            case "waiting":
                return WAITING
            case "later":
                return Postponed(replace(claimed, due_ms=int(answer[1]), token=postpone_token))
            case "open":
                return BreakerOpen(_delivered_message(claimed.ref, answer[2]), int(answer[1]))
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
        k = self.shards.named(claimed.shard)
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
            max_calls=self._calls_limit(claimed, settings.destination_max_calls) if took_call else "",
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
        flow = self.shards.named(claimed.shard).flow(claimed.dest, claimed.flow)
        bodies = self.script(HandOn(calls_key=flow.calls, waiting_key=flow.waiting, state_key=flow.state,
                                    now_ms=now_ms, max_calls=self.shards.share(max_calls)))
        return [Claimed.from_body(json.loads(body)) for body in bodies]

    def destinations(self, now_ms: int, limit: int) -> list[Destination]:
        """The destinations called in the last hour, the latest first; each shard keeps its own
        count of them, and they are added up."""
        found: dict[str, Destination] = {}
        for k in self.shards.listed():
            for dest in self._destinations(k, now_ms, limit):
                seen = found.get(dest.destination)
                found[dest.destination] = seen.plus(dest) if seen else dest
        return sorted(found.values(), key=lambda dest: -dest.last_active_minute_ms)[:limit]

    def _destinations(self, k: Keys, now_ms: int, limit: int) -> list[Destination]:
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
        self, until_ms: int, grace_ms: int, batch: int, since_ms: int | None = None, keys: Keys | None = None,
    ) -> tuple[list[Claimed], bool]:
        """Claim up to `batch` items of one shard (the bare head's by default) due at or before
        `until_ms` (and not before `since_ms`).

        Also says whether a full batch was read: then more may be due, even when fewer were
        claimed because a concurrent tick, sweep or schedule took some of them first. Every ref
        read leaves the due index either way, so a caller that goes on while it is told so ends.
        """
        k = keys or self.keys
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
                    dest=destination(flat[i + 3]) if flat[i + 3] else "", flow=flat[i + 4], shard=k.shard)
            for i in range(0, len(flat), 5)
        ]
        return claimed, len(refs) == batch

    def expedite(self, items: list[Claimed], now_ms: int) -> None:
        """Make items whose SQS send failed reclaimable by the next tick."""
        by_shard: dict[str, dict[str, int]] = {}
        for item in items:
            by_shard.setdefault(item.shard, {})[item.ref] = now_ms
        for shard, refs in by_shard.items():
            inflight = self.shards.named(shard).inflight
            self.call(lambda inflight=inflight, refs=refs: self.client.zadd(inflight, refs, xx=True))

    def reclaim_expired(self, now_ms: int, batch: int, keys: Keys | None = None) -> tuple[int, bool]:
        """Put items of one shard whose SQS message or delivery lease was lost back in the due
        index; also says whether a full batch was read (more may be expired: see claim_due)."""
        k = keys or self.keys
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


def _now_ms() -> int:
    return int(time.time() * 1000)
