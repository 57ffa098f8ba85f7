"""Redis records of WebSocket connections and their subscriptions.

They expire as API Gateway's connections do: after 10 minutes without a
message, and 2 hours after connecting at the latest, so records of clients
that vanished clean themselves up.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from .script_calls import (
    Authenticate,
    Connect,
    Disconnect,
    ProgressOffer,
    ProgressTake,
    Subscribe,
    Unsubscribe,
)
from .store import Store

IDLE_SECONDS = 600
MAX_CONNECTION_SECONDS = 7200
SCHEDULER_TOPIC = "scheduler"
# Every Socket.IO connection, authenticated or not: the tick pings the one and closes the other
# when it has waited too long (socketio.py).
HEARTBEAT_TOPIC = "engineio"


class Protocol(StrEnum):
    JSON = "json"  # {"action": …} in, {"event", "data"} out
    SOCKETIO = "socketio"  # Socket.IO v4 over Engine.IO 4 (socketio.py)


# A connection a fan-out sends to, and the protocol its frame is encoded in.
Target = tuple[str, Protocol]


@dataclass(frozen=True)
class ConnectionRecord:
    connected_ms: int
    protocol: Protocol
    authenticated: bool  # always, for JSON (on $connect); for Socket.IO, after its CONNECT packet
    token_id: str = ""  # the API token it was opened with (ws_access.token_id); '' not yet known


@dataclass(frozen=True)
class Caps:
    """How much one API token and one connection may hold (0: no cap)."""

    connections_per_token: int = 0
    subscriptions_per_connection: int = 0


class Refused(StrEnum):
    CAP = "cap"  # the cap of connections or subscriptions is reached
    GONE = "gone"  # the connection's record is gone
# How long a fan-out's record of sent chunks outlives a publisher that stopped waiting for it.
FANOUT_RECORD_SECONDS = 60
# How long a run's progress record outlives its last report: longer than its trailing send can
# take to come back through SQS.
PROGRESS_HOLD_MS = 300_000


def agent_topic(agent_id: str) -> str:
    return f"agent:{agent_id}"


class LiveStore:
    def __init__(self, store: Store) -> None:
        self._store = store
        self.client = store.client
        self.keys = store.keys
        self.call = store.call

    def _expiry(self, connected_ms: int, now: int) -> int:
        left = MAX_CONNECTION_SECONDS - (now - connected_ms) // 1000
        return max(1, min(IDLE_SECONDS, left))

    def connect(self, connection_id: str, now: int, protocol: Protocol = Protocol.JSON, token_id: str = "",
                max_connections: int = 0) -> bool:
        """Record a connection, counted against its token (`token_id`, '' for later); False when
        the token holds `max_connections` already, and nothing is recorded."""
        k = self.keys
        return bool(self._store.script(Connect(
            connection_key=k.ws_connection(connection_id),
            token_connections_key=k.ws_token_connections(token_id),
            tokens_key=k.ws_tokens, connection_id=connection_id, now_ms=now, expiry_seconds=IDLE_SECONDS,
            protocol=protocol.value, token_id=token_id, max_connections=max_connections,
            stale_before_ms=now - MAX_CONNECTION_SECONDS * 1000, hold_seconds=MAX_CONNECTION_SECONDS,
        )))

    def connected_at(self, connection_id: str) -> int | None:
        value = self.call(lambda: self.client.hget(self.keys.ws_connection(connection_id), "connectedAt"))
        return int(value) if value else None

    def record(self, connection_id: str) -> ConnectionRecord | None:
        key = self.keys.ws_connection(connection_id)
        connected, protocol, authed, token_id = self.call(
            lambda: self.client.hmget(key, "connectedAt", "protocol", "authenticatedAt", "token")
        )
        if not connected:
            return None
        speaks = Protocol(protocol or Protocol.JSON)
        authenticated = speaks is Protocol.JSON or bool(authed)
        return ConnectionRecord(int(connected), speaks, authenticated, token_id or "")

    def authenticated(
        self, connection_id: str, token_id: str, now: int, max_connections: int
    ) -> Refused | None:
        """A Socket.IO connection sent a valid CONNECT packet: count it against its token."""
        k = self.keys
        answer = int(self._store.script(Authenticate(
            connection_key=k.ws_connection(connection_id),
            token_connections_key=k.ws_token_connections(token_id),
            tokens_key=k.ws_tokens, connection_id=connection_id, token_id=token_id, now_ms=now,
            max_connections=max_connections, stale_before_ms=now - MAX_CONNECTION_SECONDS * 1000,
            hold_seconds=MAX_CONNECTION_SECONDS,
        )))
        return None if answer == 1 else Refused.CAP if answer == 0 else Refused.GONE

    def heartbeat_members(self) -> list[tuple[str, ConnectionRecord]]:
        """The Socket.IO connections, with their records; ones whose records expired leave."""
        members = sorted(self.call(lambda: self.client.smembers(self.keys.ws_topic(HEARTBEAT_TOPIC))))
        k = self.keys

        def read() -> list[list[str | None]]:
            pipe = self.client.pipeline(transaction=False)
            for member in members:
                pipe.hmget(k.ws_connection(member), "connectedAt", "protocol", "authenticatedAt")
            return pipe.execute()

        rows = self.call(read) if members else []
        dead = [m for m, row in zip(members, rows, strict=True) if not row[0]]
        if dead:
            self.call(lambda: self.client.srem(k.ws_topic(HEARTBEAT_TOPIC), *dead))
        return [
            (m, ConnectionRecord(int(str(row[0])), Protocol.SOCKETIO, bool(row[2])))
            for m, row in zip(members, rows, strict=True) if row[0]
        ]

    def subscribe(
        self, connection_id: str, topic: str, now: int, max_subscriptions: int = 0
    ) -> Refused | None:
        """Subscribe a connection to a topic, unless it holds `max_subscriptions` (0: no cap)
        already; the Socket.IO heartbeat's topic is not counted."""
        connected = self.connected_at(connection_id)
        if connected is None:
            return Refused.GONE
        k = self.keys
        answer = int(self._store.script(Subscribe(
            connection_key=k.ws_connection(connection_id),
            subscriptions_key=k.ws_subscriptions(connection_id), topic_key=k.ws_topic(topic),
            connection_id=connection_id, topic=topic,
            expiry_seconds=self._expiry(connected, now), topic_expiry_seconds=MAX_CONNECTION_SECONDS,
            max_subscriptions=max_subscriptions, uncounted_topic=HEARTBEAT_TOPIC,
        )))
        return None if answer == 1 else Refused.CAP if answer == -1 else Refused.GONE

    def touch(self, connection_id: str, now: int, connected: int | None = None) -> bool:
        """A message arrived: the connection is not idle (`connected`: its connectedAt, when read)."""
        connected = connected or self.connected_at(connection_id)
        if connected is None:
            return False
        expiry = self._expiry(connected, now)
        k = self.keys

        def refresh() -> None:
            pipe = self.client.pipeline(transaction=False)
            pipe.expire(k.ws_connection(connection_id), expiry)
            pipe.expire(k.ws_subscriptions(connection_id), expiry)
            pipe.execute()

        self.call(refresh)
        return True

    def unsubscribe(self, connection_id: str, topic: str) -> None:
        k = self.keys
        self._store.script(Unsubscribe(subscriptions_key=k.ws_subscriptions(connection_id),
                                       topic_key=k.ws_topic(topic), connection_id=connection_id, topic=topic))

    def disconnect(self, connection_id: str) -> None:
        k = self.keys

        def read() -> tuple[set[str], str | None]:
            pipe = self.client.pipeline(transaction=False)
            pipe.smembers(k.ws_subscriptions(connection_id))
            pipe.hget(k.ws_connection(connection_id), "token")
            topics, token_id = pipe.execute()
            return topics, token_id

        topics, token_id = self.call(read)
        self._store.script(Disconnect(
            connection_key=k.ws_connection(connection_id),
            subscriptions_key=k.ws_subscriptions(connection_id),
            token_connections_key=k.ws_token_connections(token_id or ""),
            topic_keys=tuple(k.ws_topic(t) for t in sorted(topics)), connection_id=connection_id,
        ))

    # -- API tokens and connect tickets ------------------------------------------------------

    def token_ids(self) -> set[str]:
        """The tokens (by id) that connections were opened with."""
        return set(self.call(lambda: self.client.smembers(self.keys.ws_tokens)))

    def connections_of(self, token_id: str) -> list[str]:
        return list(self.call(lambda: self.client.zrange(self.keys.ws_token_connections(token_id), 0, -1)))

    def forget_token(self, token_id: str) -> None:
        """A token's connections are all closed: it leaves the rotation sweep."""
        k = self.keys

        def forget() -> None:
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(k.ws_token_connections(token_id))
            pipe.srem(k.ws_tokens, token_id)
            pipe.execute()

        self.call(forget)

    def put_ticket(self, ticket_hash: str, token_id: str, expires_ms: int, ttl_ms: int) -> None:
        value = f"{token_id}:{expires_ms}"
        self.call(lambda: self.client.set(self.keys.ws_ticket(ticket_hash), value, px=ttl_ms))

    def take_ticket(self, ticket_hash: str) -> tuple[str, int] | None:
        """A ticket's token id and expiry, taken so that it works once (None: unknown or used)."""
        value = self.call(lambda: self.client.getdel(self.keys.ws_ticket(ticket_hash)))
        if not value:
            return None
        token_id, _, expires = str(value).rpartition(":")
        return token_id, int(expires)

    def subscribers(self, topic: str) -> list[Target]:
        """Live subscribers of a topic; ones whose records expired are dropped on the way."""
        members = self.call(lambda: self.client.smembers(self.keys.ws_topic(topic)))
        return self.alive(topic, members)

    def alive(self, topic: str, members: Iterable[str]) -> list[Target]:
        """Those of a topic's `members` whose connection records still exist, with the protocol
        each speaks (read in the same round trip); the others leave the topic. No round trip for
        no members."""
        k = self.keys
        members = sorted(members)
        if not members:
            return []

        def read() -> list[list[str | None]]:
            pipe = self.client.pipeline(transaction=False)
            for member in members:
                pipe.hmget(k.ws_connection(member), "connectedAt", "protocol")
            return pipe.execute()

        rows = self.call(read)
        dead = [m for m, row in zip(members, rows, strict=True) if not row[0]]
        if dead:
            self.call(lambda: self.client.srem(k.ws_topic(topic), *dead))
        return [(m, Protocol(row[1] or Protocol.JSON))
                for m, row in zip(members, rows, strict=True) if row[0]]

    def has_subscribers(self, topic: str) -> bool:
        return bool(self.call(lambda: self.client.scard(self.keys.ws_topic(topic))))

    def throttle_status(self, window_ms: int) -> bool:
        """True when a scheduler:status may go out now (at most one per window)."""
        return bool(self.call(lambda: self.client.set(self.keys.ws_status_lock, 1, nx=True, px=window_ms)))

    def claim_trailing_status(self, hold_ms: int) -> bool:
        """True when no trailing scheduler:status is queued yet; the caller queues one."""
        return bool(self.call(lambda: self.client.set(self.keys.ws_status_pending, 1, nx=True, px=hold_ms)))

    def release_trailing_status(self, window_ms: int) -> None:
        """The trailing scheduler:status goes out now: it opens a window of its own, so a change
        just after it waits for the next trailing send instead of going out at once."""
        def release() -> None:
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(self.keys.ws_status_pending)
            pipe.set(self.keys.ws_status_lock, 1, px=window_ms)
            pipe.execute()

        self.call(release)

    def offer_progress(self, run_id: str, report_json: str, now: int, window_ms: int) -> str | int:
        """A run's progress report: "send" it now, "held" for the trailing send already queued, or
        the ms a trailing send is due at, which the caller queues (see progress_offer.lua)."""
        answer = str(self._store.script(ProgressOffer(
            progress_key=self.keys.ws_progress(run_id), now_ms=now, window_ms=window_ms,
            report_json=report_json, hold_ms=PROGRESS_HOLD_MS,
        )))
        return answer if answer in ("send", "held") else int(answer)

    def take_progress(self, run_id: str, now: int, ended: bool) -> str | None:
        """The progress report held for a run, if any, to send now (`ended`: its run is over)."""
        held = self._store.script(ProgressTake(progress_key=self.keys.ws_progress(run_id), now_ms=now,
                                               why="end" if ended else "trailing"))
        return str(held) if held else None

    def fanout_sent(self, fanout_id: str) -> None:
        """One shared-out chunk of a fan-out was sent (see WsPublisher.send_to)."""
        key = self.keys.ws_fanout(fanout_id)

        def record() -> None:
            pipe = self.client.pipeline(transaction=False)
            pipe.rpush(key, 1)
            pipe.expire(key, FANOUT_RECORD_SECONDS)
            pipe.execute()

        self.call(record)

    def wait_fanout(self, fanout_id: str, chunks: int, timeout_seconds: float) -> int:
        """Wait until `chunks` shared-out chunks are sent, at most `timeout_seconds` (real time:
        this waits for other invocations' work, not for an instant); how many were."""
        key = self.keys.ws_fanout(fanout_id)
        deadline = time.monotonic() + timeout_seconds
        sent = 0
        while sent < chunks:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            # Short blocking reads: the Redis client gives up on a socket silent for 5 s.
            wait = min(1.0, left)
            if self.call(lambda wait=wait: self.client.blpop([key], timeout=wait)):
                sent += 1
        self.call(lambda: self.client.delete(key))
        return sent
