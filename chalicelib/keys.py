"""The Redis key schema: every key Punctual uses is built here and nowhere else.

| key                        | type | holds                                                      |
|----------------------------|------|------------------------------------------------------------|
| {p}:due                    | zset | items waiting for the tick; member = ref, score = due ms   |
| {p}:inflight               | zset | items handed to SQS or being delivered; score = the moment |
|                            |      | they are presumed lost (queue grace or delivery lease)     |
| {p}:msg:{id}               | hash | one webhook message (fields: see messages.Message; its     |
|                            |      | last tries in `attemptLog`, see attempt_log.py)            |
| {p}:msgs:pending           | zset | ids of messages not yet finished; score = due ms (listing) |
| {p}:msgs:failed            | zset | ids of failed messages held for inspection; score = minus  |
|                            |      | the failure's ms, so score order is newest first           |
| {p}:msgs:counts            | hash | how many messages are `queued` and `delivering` (kept by   |
|                            |      | the scripts on each transition)                            |
| {p}:stats:{minute}         | hash | one minute's counts (epoch minute): deliveries, failures,  |
|                            |      | retries, a lateness histogram, runs by outcome (stats.py); |
|                            |      | expires 2 h after its first count                          |
| {p}:agent:{id}             | hash | one agent, its schedule and its scheduling state           |
| {p}:agents                 | zset | agent ids; score = creation ms (listing)                   |
| {p}:schedules              | set  | ids of agents with an enabled schedule                     |
| {p}:paused                 | set  | ids of agents whose scheduled job is paused                |
| {p}:run:{runId}            | hash | one agent run (a cron slot, a manual run, its retries)     |
| {p}:runs-of:{id}           | zset | an agent's recent run ids; score = creation ms             |
| {p}:ready                  | zset | run ids waiting for a concurrency slot; score = priority   |
|                            |      | rank * 1e13 + due ms, so higher priority, then earlier due |
| {p}:running                | zset | run ids holding a concurrency slot; score = lease deadline |
| {p}:tick:last              | str  | ms of the last tick (the scheduler's heartbeat)            |
| {p}:shards                 | hash | the shard layouts messages may be in (shards.py): field =  |
|                            |      | a REDIS_SHARDS count, value = `held` while its shards may  |
|                            |      | hold messages, else the ms the tick found them empty       |
| {p}:dest:{dest}:calls      | zset | refs of webhook calls under way to one destination         |
|                            |      | (scheme://host:port); score = the call's lease deadline    |
| {p}:dest:{dest}:waiting    | zset | claims (SQS bodies) waiting for a call to that destination |
|                            |      | to end; score = due ms                                     |
| {p}:dest:{dest}:state      | hash | a destination's flow state: `pausedUntil` (a 429's         |
|                            |      | Retry-After), `tat` (its rate limit's next start, ms)      |
| {p}:dest:{dest}:breaker    | hash | its circuit breaker: `streak` of failed calls, `openUntil`,|
|                            |      | `opens`, the `probe` call and `probeUntil`; the calls and  |
|                            |      | failures of this `minute` and of the one before (`prev*`)  |
| {p}:dests                  | zset | destinations called lately; score = their last call's ms   |
| {p}:flow:{key}:calls       | zset | as dest:…:calls, for a flow-control key a user names       |
| {p}:flow:{key}:waiting     | zset | as dest:…:waiting, for that key                            |
| {p}:flow:{key}:state       | hash | as dest:…:state, for that key                              |
| {p}:sweep:{second}         | str  | `pending` while the sweep of one due second (epoch s) is   |
|                            |      | on its way through SQS, then `swept`; expires after it     |
| {p}:ws:conn:{connId}       | hash | a WebSocket connection (connectedAt); expires when idle    |
| {p}:ws:subs:{connId}       | set  | what a connection subscribes to: `agent:{id}`, `scheduler` |
| {p}:ws:agent:{agentId}     | set  | connection ids subscribed to one agent's events            |
| {p}:ws:scheduler           | set  | connection ids subscribed to scheduler:status              |
| {p}:ws:engineio            | set  | Socket.IO connections, which the tick pings (heartbeat)    |
| {p}:ws:status:lock         | str  | set while a scheduler:status send is throttled (PX)        |
| {p}:ws:status:pending      | str  | set while a trailing scheduler:status send is queued (PX)  |
| {p}:ws:fanout:{id}         | list | one entry per shared-out chunk of a fan-out that was sent  |
| {p}:ws:token:{tokenId}     | zset | connections opened with one API token (tokenId: a hash   |
|                            |      | of it); score = connectedAt ms. Capped per token          |
| {p}:ws:tokens              | set  | the tokenIds that have connections (the rotation sweep)    |
| {p}:ws:ticket:{hash}       | str  | a one-time connect ticket (by its hash): tokenId:expiry ms |
| {p}:ws:progress:{runId}    | hash | a run's agent:progress coalescing: sentAt, the report held |
|                            |      | for the trailing send, whether one is queued (PX)          |

Webhook messages are spread over REDIS_SHARDS shards (shards.py); the keys of a message and of
what indexes it (due, inflight, msgs:*, sweep:*, dest:*, flow:*, dests, stats:*) are built by
the `Keys` of its shard, whose head holds the shard's name (`{punctual:3.1~612}`, see `shard_head`).
Agents, runs, WebSocket state and the shard registry live under the bare head, as does every
message of a single-shard layout: REDIS_SHARDS=1 keeps the names of every earlier release.

A *ref* (claims.py) names an item in the due and inflight indexes; the hash behind
it is found with `item(ref)`. Lua scripts get every key through KEYS, never build one.

`{p}` is the head every key starts with. On a Redis in cluster mode it is a hash tag,
`{punctual}`, so that every key hashes to one slot: each Lua script's keys, and each pipeline's,
share a slot by construction. On a plain Redis it is the bare prefix, `punctual`: the names
every release before cluster support used, so an upgrade finds its data where it was (the
README's "Redis" section says why no migration renames them). A prefix that already holds a
hash tag (`{punctual}`, once the only way to run on a cluster) is used as it is in both modes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from .claims import ItemKind, kind_of, message_id_of, split_run_ref


def has_hash_tag(text: str) -> bool:
    """Whether Redis Cluster hashes `text` by a tag: a `{` followed later by a `}`, not at once."""
    opening = text.find("{")
    return opening >= 0 and text.find("}", opening + 1) > opening + 1


def slot_head(prefix: str, cluster: bool) -> str:
    """What every key starts with (see the module docstring).

    The one place a key's slot is decided: a later sharding of messages over several slots
    gives this a shard (`{punctual:3}`) and leaves every builder as it is.
    """
    if not cluster or has_hash_tag(prefix):
        return prefix
    return "{" + prefix + "}"


def shard_head(prefix: str, cluster: bool, shard: str) -> str:
    """What the keys of shard `shard` start with: the bare head for "" (the one shard of a
    single-shard layout), else the prefix and the shard's name under a hash tag of their own."""
    if not shard:
        return slot_head(prefix, cluster)
    base = f"{prefix.replace('{', '').replace('}', '')}:{shard}"
    return "{" + base + "}" if cluster else base


# How many salts are tried for each shard's name: enough to land within a few slots of its mark.
_SALTS = 2048


@functools.lru_cache(maxsize=64)
def shard_names(prefix: str, count: int) -> tuple[str, ...]:
    """The names of a layout's shards: "" for a single shard; else `{count}.{i}`, with a salt
    (`~k`) chosen so the shards' hash slots are spread evenly around the slot space, each half a
    step off from the bare head's slot (the agents'). A cluster whose primaries hold equal runs
    of slots, as `redis-cli --cluster create` and ElastiCache deal them, then gets a layout of as
    many shards as it has primaries, one shard on each. The names depend only on the prefix and
    the count, so every process computes the same ones."""
    if count == 1:
        return ("",)
    base = prefix.replace("{", "").replace("}", "")
    home = key_slot(slot_head(prefix, True).encode())
    step = REDIS_CLUSTER_HASH_SLOTS / count
    names = []
    for i in range(count):
        mark = int(home + step / 2 + i * step) % REDIS_CLUSTER_HASH_SLOTS

        def distance(salt: int, i: int = i, mark: int = mark) -> int:
            gap = abs(key_slot(f"{base}:{_name(count, i, salt)}".encode()) - mark)
            return min(gap, REDIS_CLUSTER_HASH_SLOTS - gap)

        names.append(_name(count, i, min(range(_SALTS), key=distance)))
    return tuple(names)


def _name(count: int, index: int, salt: int) -> str:
    return f"{count}.{index}~{salt}" if salt else f"{count}.{index}"


@dataclass(frozen=True)
class FlowKeys:
    """One flow's keys (see Keys.flow)."""

    calls: str
    waiting: str
    state: str


@dataclass(frozen=True)
class Keys:
    prefix: str = "punctual"
    cluster: bool = False  # the server runs in cluster mode: every key carries the hash tag
    shard: str = ""  # the message shard these keys are of (shard_names); "" for the bare head

    @property
    def head(self) -> str:
        return shard_head(self.prefix, self.cluster, self.shard)

    def of_shard(self, shard: str) -> Keys:
        """The keys of another shard under the same prefix."""
        return Keys(self.prefix, self.cluster, shard)

    @property
    def shards(self) -> str:
        return f"{self.head}:shards"

    @property
    def due(self) -> str:
        return f"{self.head}:due"

    @property
    def inflight(self) -> str:
        return f"{self.head}:inflight"

    @property
    def pending_messages(self) -> str:
        return f"{self.head}:msgs:pending"

    @property
    def failed_messages(self) -> str:
        return f"{self.head}:msgs:failed"

    @property
    def message_counts(self) -> str:
        return f"{self.head}:msgs:counts"

    def stats_minute(self, at_ms: int) -> str:
        """The stats bucket of the minute `at_ms` falls in."""
        return f"{self.head}:stats:{at_ms // 60_000}"

    def message(self, message_id: str) -> str:
        return f"{self.head}:msg:{message_id}"

    def agent(self, agent_id: str) -> str:
        return f"{self.head}:agent:{agent_id}"

    @property
    def agents(self) -> str:
        return f"{self.head}:agents"

    @property
    def schedules(self) -> str:
        return f"{self.head}:schedules"

    @property
    def paused(self) -> str:
        return f"{self.head}:paused"

    def run(self, run_id: str) -> str:
        return f"{self.head}:run:{run_id}"

    def runs_of(self, agent_id: str) -> str:
        return f"{self.head}:runs-of:{agent_id}"

    @property
    def ready(self) -> str:
        return f"{self.head}:ready"

    @property
    def running(self) -> str:
        return f"{self.head}:running"

    def sweep(self, due_ms: int) -> str:
        """The sweep marker of the second `due_ms` falls in."""
        return f"{self.head}:sweep:{due_ms // 1000}"

    def flow(self, dest: str, flow_key: str = "") -> FlowKeys:
        """The keys that hold back calls to `dest`: those of the flow-control key a message
        names, or by default its destination's own."""
        base = f"{self.head}:flow:{flow_key}" if flow_key else f"{self.head}:dest:{dest}"
        return FlowKeys(calls=f"{base}:calls", waiting=f"{base}:waiting", state=f"{base}:state")

    def breaker(self, dest: str) -> str:
        return f"{self.head}:dest:{dest}:breaker"

    @property
    def destinations(self) -> str:
        return f"{self.head}:dests"

    @property
    def tick_heartbeat(self) -> str:
        return f"{self.head}:tick:last"

    def ws_connection(self, connection_id: str) -> str:
        return f"{self.head}:ws:conn:{connection_id}"

    def ws_subscriptions(self, connection_id: str) -> str:
        return f"{self.head}:ws:subs:{connection_id}"

    def ws_topic(self, topic: str) -> str:
        """Subscribers of a topic: `agent:{agentId}` or `scheduler`."""
        return f"{self.head}:ws:{topic}"

    @property
    def ws_status_lock(self) -> str:
        return f"{self.head}:ws:status:lock"

    @property
    def ws_status_pending(self) -> str:
        return f"{self.head}:ws:status:pending"

    def ws_fanout(self, fanout_id: str) -> str:
        return f"{self.head}:ws:fanout:{fanout_id}"

    def ws_token_connections(self, token_id: str) -> str:
        return f"{self.head}:ws:token:{token_id}"

    @property
    def ws_tokens(self) -> str:
        return f"{self.head}:ws:tokens"

    def ws_ticket(self, ticket_hash: str) -> str:
        return f"{self.head}:ws:ticket:{ticket_hash}"

    def ws_progress(self, run_id: str) -> str:
        return f"{self.head}:ws:progress:{run_id}"

    def item(self, ref: str) -> str:
        """The hash that holds the item a due-index ref names."""
        if kind_of(ref) is ItemKind.MESSAGE:
            return self.message(message_id_of(ref))
        return self.run(split_run_ref(ref)[1])
