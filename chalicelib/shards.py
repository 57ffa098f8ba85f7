"""Webhook messages spread over REDIS_SHARDS hash-slot shards, and the layouts still drained.

A message lives whole in one shard: its hash and its entries in the due, inflight, listing and
failed indexes, its second's sweep marker, and the flow and breaker state its scripts touch, all
under its shard's head (keys.py), so each script still runs on one slot. Its shard is its
*home*: the CRC-32 of its id, modulo the shard count; or, for a message with flow control, of
its flow (its key, else its destination), so that a flow's calls and rate are counted in one
place and its limits hold exactly. A message without flow control shares its destination's
default limit (DESTINATION_MAX_CALLS) and breaker with the messages of its shard only: each
shard allows its share of the limit.

A message placed by its flow away from its id's home leaves a marker there (store.py, status
`elsewhere`) that holds its id, so that no other message takes the id while it is pending, and
points a lookup to it; a lookup whose marker has expired tries the other shards.

Agents, runs and the concurrency limit stay under the bare head (README, Capacity).

Changing REDIS_SHARDS starts a new *layout* (the shards of that count: keys.shard_names). Nothing
is moved: a message stays where it was created, and the old layout is read until it is empty.
The registry (keys.Keys.shards) holds every layout used, each with `held` while its shards may
hold pending or failed messages, or the ms the tick found them empty. The tick claims the shards
of every layout the registry names. While an older layout is held, a new message's id is checked
against its home there too, and listings include its shards; until retention has passed since it
was found empty (its delivered messages are kept that long), a lookup by id that misses the home
tries there as well.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .errors import PunctualError
from .keys import Keys, shard_names

log = logging.getLogger(__name__)

# The default shard count on a Redis in cluster mode: one per primary of the three-primary
# cluster ElastiCache and `redis-cli --cluster create` set up by default (README, Configuration).
CLUSTER_DEFAULT_SHARDS = 3
MAX_SHARDS = 64
# How long a process keeps what it read of the registry before reading it again.
REGISTRY_TTL_SECONDS = 60.0


def home_index(message_id: str, count: int) -> int:
    """The index of a message's home among `count` shards."""
    return zlib.crc32(message_id.encode()) % count


@dataclass(frozen=True)
class Layout:
    """The shards of one REDIS_SHARDS count."""

    count: int
    shards: tuple[Keys, ...]

    @classmethod
    def of(cls, base: Keys, count: int) -> Layout:
        return cls(count, tuple(base.of_shard(name) for name in shard_names(base.prefix, count)))

    def home(self, message_id: str, flow: str = "") -> Keys:
        """Where a new message goes: by its flow when it has flow control, else by its id."""
        return self.shards[home_index(flow or message_id, self.count)]


def unique(shards: Iterable[Keys]) -> list[Keys]:
    """Each shard once, in the order first met."""
    seen: dict[str, Keys] = {}
    for keys in shards:
        seen.setdefault(keys.shard, keys)
    return list(seen.values())


HELD = "held"
Registry = dict[int, str]  # count -> HELD, or the ms its shards were found empty


class Shards:
    """The layout new messages go to, and the older ones a lookup or the tick still reads.

    `read_registry` answers the registry; it is read at most every REGISTRY_TTL_SECONDS, so a
    process learns within that long of a layout drained.
    """

    def __init__(self, base: Keys, count: int, read_registry: Callable[[], Registry],
                 retention_ms: int = 0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.base = base
        self.current = Layout.of(base, count)
        self._read_registry = read_registry
        self.retention_ms = retention_ms
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._registry: Registry = {count: HELD}
        self._read_at: float | None = None

    def named(self, name: str) -> Keys:
        """The keys of the shard a claim names."""
        return self.base.of_shard(name)

    def home(self, message_id: str, flow: str = "") -> Keys:
        return self.current.home(message_id, flow)

    def share(self, limit: int) -> int:
        """A shard's share of a limit all shards keep together (0: none)."""
        return -(-limit // self.current.count)

    def registry(self) -> Registry:
        now = self._monotonic()
        with self._lock:
            fresh = self._read_at is not None and now - self._read_at < REGISTRY_TTL_SECONDS
            if fresh:
                return self._registry
        try:
            registry = {**self._read_registry(), self.current.count: HELD}
        except PunctualError as exc:
            # Its shard (the bare head's) does not answer: go on with what was read last, and
            # try again at the next use.
            log.warning("could not read the shard registry: %s", exc)
            with self._lock:
                return self._registry
        with self._lock:
            self._registry, self._read_at = registry, now
        return registry

    def forget_registry(self) -> None:
        """Read the registry afresh on next use (the tick, after it flagged layouts)."""
        with self._lock:
            self._read_at = None

    def _older(self, keep: Callable[[str], bool]) -> list[Layout]:
        """The older layouts whose registry state `keep` accepts."""
        return [Layout.of(self.base, count) for count, state in sorted(self.registry().items())
                if count != self.current.count and keep(state)]

    def draining(self) -> list[Layout]:
        """The older layouts whose shards may still hold pending or failed messages."""
        return self._older(lambda state: state == HELD)

    def _kept(self, now_ms: int) -> list[Layout]:
        """The older layouts held, or found empty less than retention ago: their delivered
        messages may still be kept for inspection."""
        return self._older(lambda state: state == HELD or now_ms - int(state) < self.retention_ms)

    def elsewhere(self, message_id: str) -> list[Keys]:
        """Where else a pending message of this id may be: its homes under the held layouts."""
        return self._homes(message_id, self.draining())

    def kept_elsewhere(self, message_id: str, now_ms: int) -> list[Keys]:
        """Where else any message of this id may be kept, after its home: the rest of the current
        layout (a message placed by its flow), then its homes under the layouts kept (`_kept`)."""
        home = self.home(message_id)
        rest = [keys for keys in self.current.shards if keys.shard != home.shard]
        return unique([*rest, *self._homes(message_id, self._kept(now_ms))])

    def _homes(self, message_id: str, layouts: list[Layout]) -> list[Keys]:
        home = self.home(message_id)
        return [keys for keys in unique(layout.home(message_id) for layout in layouts)
                if keys.shard != home.shard]

    def listed(self) -> list[Keys]:
        """The shards that may hold messages: the current layout's, then the drained ones'."""
        return unique([*self.current.shards, *(keys for layout in self.draining() for keys in layout.shards)])

    def known(self) -> list[Layout]:
        """Every layout the registry names, the current one first (the tick claims them all)."""
        counts = sorted(set(self.registry()) - {self.current.count})
        return [self.current, *(Layout.of(self.base, count) for count in counts)]

    def claimed(self) -> list[Keys]:
        """The shards the tick claims: the bare head's (agent runs; every message of a one-shard
        layout), then every known layout's."""
        return unique([self.base, *(keys for layout in self.known() for keys in layout.shards)])
