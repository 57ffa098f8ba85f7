"""The Redis key schema: every key Punctual uses is built here and nowhere else.

| key                        | type | holds                                                      |
|----------------------------|------|------------------------------------------------------------|
| {p}:due                    | zset | items waiting for the tick; member = ref, score = due ms   |
| {p}:inflight               | zset | items handed to SQS or being delivered; score = the moment |
|                            |      | they are presumed lost (queue grace or delivery lease)     |
| {p}:msg:{id}               | hash | one webhook message (fields: see messages.Message)         |
| {p}:msgs:pending           | zset | ids of messages not yet finished; score = due ms (listing) |
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
| {p}:dest:{dest}:calls      | zset | refs of webhook calls under way to one destination         |
|                            |      | (scheme://host:port); score = the call's lease deadline    |
| {p}:dest:{dest}:waiting    | zset | claims (SQS bodies) waiting for a call to that destination |
|                            |      | to end; score = due ms                                     |
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

A *ref* (claims.py) names an item in the due and inflight indexes; the hash behind
it is found with `item(ref)`. Lua scripts get every key through KEYS, never build one.
"""

from __future__ import annotations

from dataclasses import dataclass

from .claims import ItemKind, kind_of, message_id_of, split_run_ref


@dataclass(frozen=True)
class Keys:
    prefix: str = "punctual"

    @property
    def due(self) -> str:
        return f"{self.prefix}:due"

    @property
    def inflight(self) -> str:
        return f"{self.prefix}:inflight"

    @property
    def pending_messages(self) -> str:
        return f"{self.prefix}:msgs:pending"

    def message(self, message_id: str) -> str:
        return f"{self.prefix}:msg:{message_id}"

    def agent(self, agent_id: str) -> str:
        return f"{self.prefix}:agent:{agent_id}"

    @property
    def agents(self) -> str:
        return f"{self.prefix}:agents"

    @property
    def schedules(self) -> str:
        return f"{self.prefix}:schedules"

    @property
    def paused(self) -> str:
        return f"{self.prefix}:paused"

    def run(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}"

    def runs_of(self, agent_id: str) -> str:
        return f"{self.prefix}:runs-of:{agent_id}"

    @property
    def ready(self) -> str:
        return f"{self.prefix}:ready"

    @property
    def running(self) -> str:
        return f"{self.prefix}:running"

    def sweep(self, due_ms: int) -> str:
        """The sweep marker of the second `due_ms` falls in."""
        return f"{self.prefix}:sweep:{due_ms // 1000}"

    def destination_calls(self, dest: str) -> str:
        return f"{self.prefix}:dest:{dest}:calls"

    def destination_waiting(self, dest: str) -> str:
        return f"{self.prefix}:dest:{dest}:waiting"

    @property
    def tick_heartbeat(self) -> str:
        return f"{self.prefix}:tick:last"

    def ws_connection(self, connection_id: str) -> str:
        return f"{self.prefix}:ws:conn:{connection_id}"

    def ws_subscriptions(self, connection_id: str) -> str:
        return f"{self.prefix}:ws:subs:{connection_id}"

    def ws_topic(self, topic: str) -> str:
        """Subscribers of a topic: `agent:{agentId}` or `scheduler`."""
        return f"{self.prefix}:ws:{topic}"

    @property
    def ws_status_lock(self) -> str:
        return f"{self.prefix}:ws:status:lock"

    @property
    def ws_status_pending(self) -> str:
        return f"{self.prefix}:ws:status:pending"

    def ws_fanout(self, fanout_id: str) -> str:
        return f"{self.prefix}:ws:fanout:{fanout_id}"

    def item(self, ref: str) -> str:
        """The hash that holds the item a due-index ref names."""
        if kind_of(ref) is ItemKind.MESSAGE:
            return self.message(message_id_of(ref))
        return self.run(split_run_ref(ref)[1])
