"""Capacity: what Redis holds per message, agent and run, and the Redis CPU an agent run costs.

    .venv/bin/python -u bench/capacity.py [--messages 100000] [--delivered 20000] [--agents 5000]
                                          [--limit 50] [--rounds 3] [--redis plain|one-node]
                                          [--hash-max-listpack-value N]

Starts a throwaway redis-server (`--redis one-node`: one cluster node holding every slot,
ElastiCache Serverless's shape) and drives it in-process through the project's own code: messages
are admitted by `Scheduler.admit` (what POST /messages runs), delivered by the tick and the
`Dispatcher`; agents are created and scheduled by the API's handlers, and their cron slots fired
by the tick and the dispatcher (fire, begin, call, finish, the ready queue), on its 64 threads
and group-committed script calls. The clock is a fake one, and two parts stand in for what is not
measured: the HTTP call (every webhook and agent call answers 200 at once) and SQS (a list: its
delays are in the fake clock's time, and the dispatcher is fed what was sent to it).

Memory is `INFO memory` used_memory (less the clients' buffers) before and after, per item; CPU is `INFO cpu`
(used_cpu_sys + used_cpu_user) before and after, less what the idle server spends in that time.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis
from support import ROOT  # noqa: F401  (puts the project on sys.path)

# The stores log and count every delivery and run: keep that off the report.
os.environ.update(LOG_LEVEL="WARNING", POWERTOOLS_LOG_LEVEL="WARNING", POWERTOOLS_METRICS_DISABLED="true")

from chalicelib import agents_api
from chalicelib.agent_runner import AgentRunner
from chalicelib.clock import FakeClock
from chalicelib.config import Settings
from chalicelib.dispatch_queue import Handoff
from chalicelib.dispatcher import Dispatcher
from chalicelib.messages import NewMessage
from chalicelib.scheduler import Scheduler
from chalicelib.sender import DeliveryResult
from chalicelib.services import Services
from chalicelib.webhook_delivery import WebhookDelivery
from emulator.redis_cluster import LocalCluster
from emulator.redis_server import RedisServer

T0 = 1_893_456_010_000  # 2030-01-01T00:00:10Z: ten seconds into a minute
GB = 1024**3
BUSY = 0.70  # the share of one core Redis may be kept busy
ELASTICACHE_RESERVED = 0.25  # reserved-memory-percent's default on ElastiCache node-based clusters
SAMPLES = 200  # keys read with MEMORY USAGE for a breakdown


# -- what is not measured ---------------------------------------------------------------------------


class ListQueue:
    """SQS as far as DispatchQueue uses it: what is sent is kept, for the dispatcher to be fed."""

    def __init__(self) -> None:
        self._bodies: list[str] = []
        self._lock = threading.Lock()

    def send_message(self, QueueUrl: str, MessageBody: str, DelaySeconds: int = 0) -> dict[str, Any]:  # noqa: N803
        with self._lock:
            self._bodies.append(MessageBody)
        return {}

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        with self._lock:
            self._bodies += [entry["MessageBody"] for entry in Entries]
        return {"Successful": [{"Id": entry["Id"]} for entry in Entries], "Failed": []}

    def take(self) -> list[str]:
        with self._lock:
            bodies, self._bodies = self._bodies, []
        return bodies


class AnswersOk:
    """Every webhook and agent call answered 200 at once."""

    def post(self, url: str, body: bytes, headers: dict[str, str], field: str,
             timeout: float | None = None) -> DeliveryResult:
        return DeliveryResult(ok=True, retryable=False, status_code=200)

    def warm(self, url: str, connections: int, timeout: float, executor: Any) -> int:
        return 0


class NoSockets:
    """The WebSocket publisher's share of the dispatcher's work: none here (nobody subscribes)."""

    def send_trailing_status(self) -> None: ...

    def send_trailing_progress(self, body: Mapping[str, Any]) -> None: ...

    def send_shared(self, body: Mapping[str, Any]) -> None: ...

    def send_open(self, body: Mapping[str, Any]) -> None: ...


def public_resolver(host: str, port: int) -> Iterable[str]:
    return ["203.0.113.7"]


# -- the rig ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rig:
    """The services on a fresh Redis, with a dispatcher and a scheduler as Services.build makes
    them but calling through AnswersOk."""

    svc: Services
    scheduler: Scheduler
    dispatcher: Dispatcher
    clock: FakeClock
    queue: ListQueue

    @classmethod
    def build(cls, redis_url: str, max_concurrent_agents: int) -> Rig:
        settings = Settings.from_env({
            "REDIS_URL": redis_url, "API_TOKEN": "capacity", "PUNCTUAL_LOCAL": "1",
            "DISPATCH_QUEUE_URL": "list://dispatch", "FANOUT_QUEUE_URL": "list://fanout",
            "MAX_CONCURRENT_AGENTS": str(max_concurrent_agents),
        })
        clock, queue, sender = FakeClock(T0), ListQueue(), AnswersOk()
        svc = Services.build(settings, clock=clock, sqs_client=queue, resolver=public_resolver)
        store = svc.message_store
        handoff = Handoff(svc.dispatch_queue, store, clock)
        runner = AgentRunner(svc.agent_store, svc.run_store, handoff, sender,  # type: ignore[arg-type]
                             svc.events, clock, settings)
        scheduler = Scheduler(store, svc.dispatch_queue, handoff, clock, settings, runner)
        webhooks = WebhookDelivery(store, handoff, sender, clock, settings)  # type: ignore[arg-type]
        dispatcher = Dispatcher(store, scheduler, handoff, webhooks, runner, NoSockets(),
                                sender, clock, settings)  # type: ignore[arg-type]
        return cls(svc, scheduler, dispatcher, clock, queue)

    def tick_and_drain(self) -> int:
        """The tick, then the dispatcher fed every SQS body sent, 10 to an invocation as Lambda
        takes them, until none is left. Returns how many items the tick claimed."""
        claimed = self.scheduler.tick(self.clock.now_ms() + 60_000).claimed
        while bodies := self.queue.take():
            for first in range(0, len(bodies), 10):
                self.dispatcher.handle_bodies(bodies[first:first + 10], lambda: self.clock.now_ms() + 600_000)
        return claimed


class Probe:
    """INFO on the one server that holds every key."""

    def __init__(self, host: str, port: int) -> None:
        self.client = redis.Redis(host=host, port=port, decode_responses=True)
        # The slow log keeps the arguments of its last 128 slow commands (a claim of 500 items is
        # one): up to half a MB that belongs to no item.
        self.client.config_set("slowlog-log-slower-than", -1)
        self.idle_cpu_per_second = 0.0

    def memory(self) -> int:
        """used_memory less the clients' buffers (a pipeline's reply held for a moment is no
        item's)."""
        info = self.client.info("memory")
        return int(info["used_memory"]) - int(info["mem_clients_normal"])

    def cpu(self) -> float:
        info = self.client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def measure_idle(self, seconds: float = 3.0) -> None:
        before = self.cpu()
        time.sleep(seconds)
        self.idle_cpu_per_second = (self.cpu() - before) / seconds

    def usage(self, key: str) -> int:
        return int(self.client.memory_usage(key, samples=0) or 0)

    def encoding(self, key: str) -> str:
        return str(self.client.object("encoding", key))


@dataclass
class Spell:
    """Redis's memory and CPU over a piece of work."""

    probe: Probe
    memory: int = 0
    cpu: float = 0.0

    def __enter__(self) -> Spell:
        self._memory, self._cpu, self._at = self.probe.memory(), self.probe.cpu(), time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        idle = self.probe.idle_cpu_per_second * (time.monotonic() - self._at)
        self.memory = self.probe.memory() - self._memory
        self.cpu = self.probe.cpu() - self._cpu - idle


# -- messages ---------------------------------------------------------------------------------------


def payload_json(i: int, size: int) -> str:
    """An order event of about `size` bytes of compact JSON."""
    body = {"event": "order.shipped", "orderId": f"ord_{i:010d}", "customerId": f"cus_{i % 9973:06d}",
            "amount": 4299 + i % 1000, "currency": "EUR", "carrier": "dhl", "note": ""}
    text = json.dumps(body, separators=(",", ":"))
    body["note"] = "x" * max(0, size - len(text))
    return json.dumps(body, separators=(",", ":"))


def new_message(i: int, due_ms: int, payload_bytes: int) -> NewMessage:
    return NewMessage(id=f"msg_{secrets.token_hex(8)}", due_ms=due_ms,
                      payload_json=payload_json(i, payload_bytes),
                      webhook_url=f"https://10.1.{i % 20}.9:8443/hooks/orders/v2")


def admit_all(rig: Rig, messages: list[NewMessage]) -> None:
    """POST /messages's Redis work, from 8 threads (as concurrent API calls would send it)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in pool.map(rig.scheduler.admit, messages, chunksize=256):
            pass


@dataclass(frozen=True)
class MessageFigures:
    count: int
    payload_bytes: int
    per_message: float  # used_memory per pending message
    cpu_us: float  # Redis CPU per admit
    hash_bytes: float  # MEMORY USAGE of one message hash, mean of a sample
    hash_encoding: str
    due_entry: float  # the due index's MEMORY USAGE per entry
    pending_entry: float  # the pending listing's MEMORY USAGE per entry


def pending_messages(rig: Rig, probe: Probe, count: int, payload_bytes: int) -> MessageFigures:
    """`count` messages due from an hour on, one every 0.8 s (beyond the tick's window: they wait
    in the due index)."""
    first_due = rig.clock.now_ms() + 3_600_000
    messages = [new_message(i, first_due + i * 800, payload_bytes) for i in range(count)]
    with Spell(probe) as spell:
        admit_all(rig, messages)
    keys = rig.svc.message_store.keys
    sample = [keys.message(m.id) for m in messages[:: max(1, count // SAMPLES)]]
    return MessageFigures(
        count, len(messages[0].payload_json), spell.memory / count, spell.cpu / count * 1e6,
        sum(probe.usage(key) for key in sample) / len(sample), probe.encoding(sample[0]),
        probe.usage(keys.due) / count, probe.usage(keys.pending_messages) / count,
    )


@dataclass(frozen=True)
class DeliveredFigures:
    count: int
    per_message: float  # used_memory per delivered message kept, against before it was created
    cpu_us: float  # Redis CPU per message: tick's claim, begin, finish
    hash_bytes: float
    hash_encoding: str
    fields: tuple[str, ...]
    ttl_seconds: int


def delivered_messages(rig: Rig, probe: Probe, count: int, payload_bytes: int) -> DeliveredFigures:
    """`count` messages due 200 a second, claimed by the tick and delivered by the dispatcher."""
    first_due = rig.clock.now_ms() + 3_600_000
    messages = [new_message(i, first_due + i * 5, payload_bytes) for i in range(count)]
    with Spell(probe) as kept:
        admit_all(rig, messages)
        rig.clock.set(first_due - 10_000)
        with Spell(probe) as delivery:
            claimed = rig.tick_and_drain()
    assert claimed == count, f"the tick claimed {claimed} of {count}"
    keys = rig.svc.message_store.keys
    sample = [keys.message(m.id) for m in messages[:: max(1, count // SAMPLES)]]
    record = probe.client.hgetall(sample[0])
    assert record["status"] == "delivered", record
    return DeliveredFigures(
        count, kept.memory / count, delivery.cpu / count * 1e6,
        sum(probe.usage(key) for key in sample) / len(sample), probe.encoding(sample[0]),
        tuple(record), int(probe.client.ttl(sample[0])),
    )


# -- agents -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentFigures:
    count: int
    limit: int
    per_agent: float  # used_memory per agent with a schedule (and its pending slot)
    agent_encoding: str
    crud_cpu_us: float  # Redis CPU per create + set schedule
    round_cpu_us: tuple[float, ...]  # Redis CPU per run, per round (a minute's slots)
    round_memory: tuple[float, ...]  # used_memory per run, per round
    run_hash_bytes: float  # MEMORY USAGE of one finished run's hash
    run_encoding: str
    run_ttl_seconds: int

    @property
    def cpu_per_run_us(self) -> float:
        """Once every agent has its recent-runs list (the first round creates them)."""
        steady = self.round_cpu_us[1:] or self.round_cpu_us
        return sum(steady) / len(steady)

    @property
    def memory_per_run(self) -> float:
        steady = self.round_memory[1:] or self.round_memory
        return sum(steady) / len(steady)


def create_agents(rig: Rig, count: int) -> None:
    """POST /api/agents and POST /api/agents/{id}/schedule (`* * * * *`), as the API runs them."""
    def create(i: int) -> None:
        agent = {"id": f"agent-{i:06d}", "name": f"Nightly report {i}",
                 "endpointUrl": f"https://10.2.{i % 20}.5:8443/agents/report"}
        agents_api.create_agent(rig.svc, json.dumps(agent).encode())
        schedule = {"cronExpression": "* * * * *", "priority": "NORMAL"}
        agents_api.schedule_agent(rig.svc, agent["id"], json.dumps(schedule).encode())

    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in pool.map(create, range(count), chunksize=64):
            pass
    rig.queue.take()  # the sweeps the schedules asked for: the tick claims those slots here


def fire_rounds(rig: Rig, probe: Probe, count: int, rounds: int) -> tuple[list[float], list[float]]:
    """Each round, a minute's slots: the tick claims them 30 s ahead, the dispatcher fires, begins,
    calls and finishes every run (through the ready queue once the limit is reached)."""
    cpu, memory = [], []
    for r in range(rounds):
        slot = (T0 // 60_000 + 1 + r) * 60_000
        rig.clock.set(max(rig.clock.now_ms(), slot - 30_000))
        with Spell(probe) as spell:
            claimed = rig.tick_and_drain()
        assert claimed == count, f"round {r + 1}: the tick claimed {claimed} of {count}"
        running = probe.client.zcard(rig.svc.agent_store.keys.running)
        assert running == 0, f"round {r + 1}: {running} runs still hold a slot"
        cpu.append(spell.cpu / count * 1e6)
        memory.append(spell.memory / count)
    return cpu, memory


def agent_runs(rig: Rig, probe: Probe, count: int, rounds: int, limit: int) -> AgentFigures:
    with Spell(probe) as crud:
        create_agents(rig, count)
    cpu, memory = fire_rounds(rig, probe, count, rounds)
    keys = rig.svc.agent_store.keys
    sample = [f"agent-{i:06d}" for i in range(0, count, max(1, count // SAMPLES))]
    run_keys = [keys.run(str(probe.client.zrange(keys.runs_of(agent_id), 0, 0)[0])) for agent_id in sample]
    record = probe.client.hgetall(run_keys[0])
    assert record["status"] == "completed", record
    return AgentFigures(
        count, limit, crud.memory / count, probe.encoding(keys.agent(sample[0])), crud.cpu / count * 1e6,
        tuple(cpu), tuple(memory), sum(probe.usage(key) for key in run_keys) / len(run_keys),
        probe.encoding(run_keys[0]), int(probe.client.ttl(run_keys[0])),
    )


# -- the report -------------------------------------------------------------------------------------


def per_gb(bytes_each: float) -> str:
    usable = GB * (1 - ELASTICACHE_RESERVED)
    return (f"{GB / bytes_each / 1e6:.2f} M per GB of used_memory ({usable / bytes_each / 1e6:.2f} M per GB "
            f"of node memory with {ELASTICACHE_RESERVED:.0%} reserved)")


def report_messages(figures: MessageFigures) -> list[tuple[str, str]]:
    f = figures
    return [
        (f"pending message, {f.payload_bytes} B payload",
         f"{f.per_message:.0f} B of used_memory ({f.count:,} messages); message hash {f.hash_bytes:.0f} B "
         f"({f.hash_encoding}), due index entry {f.due_entry:.0f} B, pending listing entry "
         f"{f.pending_entry:.0f} B; Redis CPU per admit {f.cpu_us:.1f} us"),
        (f"pending messages, {f.payload_bytes} B payload", per_gb(f.per_message)),
    ]


def report_delivered(figures: DeliveredFigures) -> list[tuple[str, str]]:
    f = figures
    return [
        ("delivered message kept",
         f"{f.per_message:.0f} B of used_memory ({f.count:,} messages); its hash {f.hash_bytes:.0f} B "
         f"({f.hash_encoding}; fields {', '.join(f.fields)}), kept {f.ttl_seconds:,} s"),
        ("delivery, Redis CPU per message", f"{f.cpu_us:.1f} us (tick's claim, begin, finish)"),
    ]


def report_agents(figures: AgentFigures) -> list[tuple[str, str]]:
    f = figures
    runs_per_s = BUSY / (f.cpu_per_run_us / 1e6)
    rounds = ", ".join(f"{c:.1f}" for c in f.round_cpu_us)
    memory = ", ".join(f"{m:.0f}" for m in f.round_memory)
    kept = f.run_ttl_seconds // 60 + 1  # a per-minute agent's runs inside the retention
    return [
        (f"agent with a schedule (limit {f.limit})",
         f"{f.per_agent:.0f} B of used_memory ({f.count:,} agents, each with its pending slot; agent "
         f"hash {f.agent_encoding}); Redis CPU per create + schedule {f.crud_cpu_us:.1f} us"),
        (f"agent run, Redis CPU (limit {f.limit})",
         f"{f.cpu_per_run_us:.1f} us per run (per round of {f.count:,}: {rounds} us; the first creates "
         f"each agent's recent-runs list) -> {runs_per_s:,.0f} runs/s on one core at {BUSY:.0%} busy = "
         f"{runs_per_s * 60:,.0f} agents on a per-minute cron"),
        (f"agent run kept (limit {f.limit})",
         f"{f.memory_per_run:.0f} B of used_memory per run (per round: {memory} B); its hash "
         f"{f.run_hash_bytes:.0f} B ({f.run_encoding}), kept {f.run_ttl_seconds:,} s: a per-minute agent "
         f"keeps {kept:,} runs, {kept * f.memory_per_run / 1e6:.2f} MB"),
    ]


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(what) for what, _ in rows)
    for what, figure in rows:
        print(f"{what:<{width}}  {figure}")


# -- main -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    url: str
    host: str
    port: int
    stop: Callable[[], None]


def start_server(shape: str, listpack_value: int | None) -> Server:
    if shape == "one-node":
        cluster = LocalCluster(one_node=True)
        return Server(cluster.url, "127.0.0.1", cluster.ports[0], cluster.stop)
    server = RedisServer(*(("--hash-max-listpack-value", str(listpack_value)) if listpack_value else ()))
    return Server(server.url, "127.0.0.1", server.port, server.stop)


def fresh(server: Server, probe: Probe, limit: int) -> Rig:
    probe.client.flushall()
    return Rig.build(server.url, limit)


def run(options: argparse.Namespace, server: Server) -> list[tuple[str, str]]:
    probe = Probe(server.host, server.port)
    probe.measure_idle()
    info = probe.client.info("server")
    print(f"redis {info['redis_version']} ({options.redis}); idle CPU "
          f"{probe.idle_cpu_per_second * 1000:.2f} ms/s")
    rows: list[tuple[str, str]] = []
    for payload_bytes in (200, 1024):
        rig = fresh(server, probe, options.limit)
        rows += report_messages(pending_messages(rig, probe, options.messages, payload_bytes))
    rig = fresh(server, probe, options.limit)
    rows += report_delivered(delivered_messages(rig, probe, options.delivered, 200))
    for limit in (options.limit, options.agents):
        rig = fresh(server, probe, limit)
        rows += report_agents(agent_runs(rig, probe, options.agents, options.rounds, limit))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000, help="pending messages to measure")
    parser.add_argument("--delivered", type=int, default=20_000, help="messages to deliver and keep")
    parser.add_argument("--agents", type=int, default=5_000, help="agents on a per-minute cron")
    parser.add_argument("--limit", type=int, default=50, help="MAX_CONCURRENT_AGENTS (then: no limit)")
    parser.add_argument("--rounds", type=int, default=3, help="minutes of slots to fire")
    parser.add_argument("--redis", choices=["plain", "one-node"], default="plain")
    parser.add_argument("--hash-max-listpack-value", type=int, default=None,
                        help="redis-server's setting (plain only; 64 unless told): hashes whose "
                        "values are all this short or shorter are kept compact")
    options = parser.parse_args()
    server = start_server(options.redis, options.hash_max_listpack_value)
    try:
        started = time.monotonic()
        rows = run(options, server)
        print(f"measured in {time.monotonic() - started:.0f} s")
        print_table(rows)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
