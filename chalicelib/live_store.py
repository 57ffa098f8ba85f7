"""Redis records of WebSocket connections and their subscriptions.

They expire as API Gateway's connections do: after 10 minutes without a
message, and 2 hours after connecting at the latest, so records of clients
that vanished clean themselves up.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from .script_calls import Connect, Disconnect, Subscribe, Unsubscribe
from .store import Store

IDLE_SECONDS = 600
MAX_CONNECTION_SECONDS = 7200
SCHEDULER_TOPIC = "scheduler"
# How long a fan-out's record of sent chunks outlives a publisher that stopped waiting for it.
FANOUT_RECORD_SECONDS = 60


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

    def connect(self, connection_id: str, now: int) -> None:
        self._store.script(Connect(connection_key=self.keys.ws_connection(connection_id),
                                   connection_id=connection_id, now_ms=now, expiry_seconds=IDLE_SECONDS))

    def connected_at(self, connection_id: str) -> int | None:
        value = self.call(lambda: self.client.hget(self.keys.ws_connection(connection_id), "connectedAt"))
        return int(value) if value else None

    def subscribe(self, connection_id: str, topic: str, now: int) -> bool:
        connected = self.connected_at(connection_id)
        if connected is None:
            return False
        k = self.keys
        return bool(self._store.script(Subscribe(
            connection_key=k.ws_connection(connection_id),
            subscriptions_key=k.ws_subscriptions(connection_id), topic_key=k.ws_topic(topic),
            connection_id=connection_id, topic=topic,
            expiry_seconds=self._expiry(connected, now), topic_expiry_seconds=MAX_CONNECTION_SECONDS,
        )))

    def touch(self, connection_id: str, now: int) -> bool:
        """A message arrived: the connection is not idle."""
        connected = self.connected_at(connection_id)
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
        topics = self.call(lambda: self.client.smembers(k.ws_subscriptions(connection_id)))
        self._store.script(Disconnect(
            connection_key=k.ws_connection(connection_id),
            subscriptions_key=k.ws_subscriptions(connection_id),
            topic_keys=tuple(k.ws_topic(t) for t in sorted(topics)), connection_id=connection_id,
        ))

    def subscribers(self, topic: str) -> list[str]:
        """Live subscribers of a topic; ones whose records expired are dropped on the way."""
        members = self.call(lambda: self.client.smembers(self.keys.ws_topic(topic)))
        return self.alive(topic, members)

    def alive(self, topic: str, members: Iterable[str]) -> list[str]:
        """Those of a topic's `members` whose connection records still exist; the others leave
        the topic. No round trip for no members."""
        k = self.keys
        members = sorted(members)
        if not members:
            return []

        def read() -> list[int]:
            pipe = self.client.pipeline(transaction=False)
            for member in members:
                pipe.exists(k.ws_connection(member))
            return pipe.execute()

        alive = self.call(read)
        dead = [m for m, ok in zip(members, alive, strict=True) if not ok]
        if dead:
            self.call(lambda: self.client.srem(k.ws_topic(topic), *dead))
        return [m for m, ok in zip(members, alive, strict=True) if ok]

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
