"""Benchmark: webhook delivery precision, a burst, POST throughput, and the tick with 1M pending.

    .venv/bin/python bench/webhooks.py                   # everything (`make bench`)
    .venv/bin/python bench/webhooks.py --only precision  # or burst, post-rate, tick
    .venv/bin/python bench/webhooks.py --redis cluster   # or one-node: on a throwaway Redis Cluster
    .venv/bin/python bench/webhooks.py --shards 3        # REDIS_SHARDS (default: 1 plain, 3 cluster)
    .venv/bin/python bench/webhooks.py --only isolation  # healthy webhooks beside a slow and a dead endpoint

Each run starts a fresh local stack (`make run`'s entry point: REST API, SQS on a moto server,
pollers, ticker, private Redis) on free ports, and a webhook receiver in this process. The tick
figure is measured in-process on the same kind of Redis, holding 1,000,000 pending messages.
Targets (2 cores): precision p99 lateness <= 10 ms with 0 missing / 0 duplicates; burst of 5,000
drained <= 3 s; >= 1,500 POST/s with 16 clients; tick <= 5 ms with 1M pending, none due;
isolation: the healthy messages' p99 lateness <= 10 ms, 0 missing / 0 duplicates.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import time
from typing import Any

import aiohttp
from support import AsyncReceiver, iso, running, summary

from emulator.launcher import TOKEN
from emulator.ports import free_port

CLIENTS = 16


async def post_all(
    url: str, bodies: list[dict[str, Any]], clients: int = CLIENTS
) -> tuple[float, collections.Counter[int]]:
    """POST every body with `clients` concurrent connections; returns (seconds, status counts)."""
    statuses: collections.Counter[int] = collections.Counter()
    todo = iter(bodies)
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def client(session: aiohttp.ClientSession) -> None:
        for body in todo:
            async with session.post(url + "/messages", json=body, headers=headers) as response:
                await response.read()
                statuses[response.status] += 1

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        return time.perf_counter() - started, statuses


def message(prefix: str, i: int, due: float, url: str) -> dict[str, Any]:
    return {"id": f"{prefix}-{i}", "scheduleTo": iso(due), "payload": {"id": f"{prefix}-{i}"},
            "webhookUrl": url}


def report(name: str, rcv: AsyncReceiver, prefix: str, dues: dict[str, float]) -> list[float]:
    seen = collections.Counter(a.body["id"] for a in rcv.arrivals if a.body["id"].startswith(prefix))
    first = {}
    for a in rcv.arrivals:
        first.setdefault(a.body["id"], a.at)
    lateness = [(first[i] - due) * 1000 for i, due in dues.items() if i in first]
    missing = sum(1 for i in dues if i not in seen)
    duplicates = sum(n - 1 for n in seen.values() if n > 1)
    print(f"  {name}: delivered {len(lateness)}/{len(dues)}, missing {missing}, duplicates {duplicates}")
    print(f"  lateness: {summary(lateness)}; early (before due): {sum(1 for x in lateness if x < 0)}")
    return lateness


async def precision(stack_url: str, rcv: AsyncReceiver, count: int = 2000, spread: float = 20.0) -> None:
    print(f"precision: {count} messages due evenly over {spread:.0f} s")
    # Far enough ahead that every message is scheduled before the first falls due.
    start = time.time() + 45
    # Whole milliseconds, as scheduleTo carries them: lateness is measured from the instant asked for.
    dues = {f"p-{i}": int((start + i * spread / count) * 1000) / 1000 for i in range(count)}
    bodies = [message("p", i, due, rcv.url + "/precision") for i, due in enumerate(dues.values())]
    seconds, statuses = await post_all(stack_url, bodies)
    print(f"  scheduled in {seconds:.2f} s {dict(statuses)}; first due {start - time.time():.1f} s later")
    await rcv.wait_for(lambda: len(rcv.arrivals) >= count, timeout=start + spread + 30 - time.time())
    await asyncio.sleep(3)  # anything arriving twice would come now
    report("precision", rcv, "p-", dues)


async def burst(stack_url: str, rcv: AsyncReceiver, count: int = 5000) -> None:
    print(f"burst: {count} messages due at the same instant")
    due = int((time.time() + 100) * 1000) / 1000  # whole milliseconds, as scheduleTo carries them
    dues = {f"b-{i}": due for i in range(count)}
    bodies = [message("b", i, due, rcv.url + "/burst") for i in range(count)]
    seconds, statuses = await post_all(stack_url, bodies)
    print(f"  scheduled in {seconds:.2f} s {dict(statuses)}; due {due - time.time():.1f} s later")
    await rcv.wait_for(lambda: sum(1 for a in rcv.arrivals if a.path == "/burst") >= count,
                       timeout=due + 60 - time.time())
    await asyncio.sleep(3)
    lateness = report("burst", rcv, "b-", dues)
    if lateness:
        print(f"  drained in {max(lateness) / 1000:.2f} s after the due instant")
        # Where the time went: a slow start (queue, connections) or a steady rate (CPU).
        per_half = collections.Counter(int(x // 500) for x in lateness)
        print("  delivered per 0.5 s after due: "
              + " ".join(str(per_half[i]) for i in range(max(per_half) + 1)))


async def post_rate(stack_url: str, rcv: AsyncReceiver, count: int = 10_000) -> None:
    print(f"post-rate: {count} POST /messages with {CLIENTS} concurrent clients (due tomorrow)")
    due = time.time() + 86_400
    bodies = [message("r", i, due, rcv.url + "/rate") for i in range(count)]
    await post_all(stack_url, bodies[:500])  # warm up connections and the processes
    seconds, statuses = await post_all(stack_url, bodies[500:])
    print(f"  {(count - 500) / seconds:.0f} POST/s ({dict(statuses)})")


def tick_with_pending(redis_url: str | None, shards: int | None, total: int = 1_000_000) -> None:
    """The tick's own time with `total` pending messages, none due, spread over the shards: in
    this process, on the bench's Redis (a private one by default), moto's SQS in-process."""
    from moto import mock_aws

    from chalicelib.claims import WayIn
    from chalicelib.clock import SystemClock
    from chalicelib.config import Settings
    from chalicelib.messages import NewMessage
    from chalicelib.services import Services
    from chalicelib.store import create_call
    from emulator.redis_server import RedisServer

    # This part runs the app's code in this process: keep its log lines and metrics off the report.
    os.environ.update(LOG_LEVEL="WARNING", POWERTOOLS_METRICS_DISABLED="true")
    server = None if redis_url else RedisServer()
    os.environ.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1")
    try:
        with mock_aws():
            import boto3

            boto3.client("sqs", region_name="us-east-1").create_queue(QueueName="punctual-dispatch")
            env = {"REDIS_URL": redis_url or server.url, "API_TOKEN": "x",
                   **({"REDIS_SHARDS": str(shards)} if shards else {})}
            svc = Services.build(Settings.from_env(env))
            store = svc.message_store
            store.client.flushall()
            print(f"tick: {total:,} pending messages, none due, over {store.shards.current.count} shard(s)")
            now = SystemClock().now_ms()
            started = time.perf_counter()
            for base in range(0, total, 20_000):
                calls = []
                for i in range(base, min(total, base + 20_000)):
                    new = NewMessage(f"t-{i}", now + 86_400_000 + i, "{}", "http://127.0.0.1:9/")  # a day on
                    calls.append(create_call(new, store.place(new, now), now, WayIn.TICK, "", 0, 0))
                store.scripts.call_many(calls)
            print(f"  loaded in {time.perf_counter() - started:.0f} s")
            times = []
            for _ in range(50):
                t0 = time.perf_counter()
                svc.scheduler.tick(SystemClock().now_ms() + 50_000)
                times.append((time.perf_counter() - t0) * 1000)
            print(f"  tick: {summary(times)}")
            pages = []
            for _ in range(20):
                t0 = time.perf_counter()
                svc.message_store.page_pending(100, None)
                pages.append((time.perf_counter() - t0) * 1000)
            print(f"  GET /messages first page (store): {summary(pages)}")
    finally:
        if server is not None:
            server.stop()


SLOW_SECONDS = 8


async def isolation(stack_url: str, rcv: AsyncReceiver, count: int = 2000, bad: int = 1000) -> None:
    """The precision run, with `bad` messages to an endpoint that answers after 8 s and `bad` to a
    port that refuses connections, all due at once 6 s into it (issue 20's scenario)."""
    spread = 20.0
    print(f"isolation: {count} healthy messages over {spread:.0f} s; {bad} to an endpoint answering "
          f"after {SLOW_SECONDS} s and {bad} to a refused port, due together 6 s in")
    start = time.time() + 45
    dues = {f"h-{i}": int((start + i * spread / count) * 1000) / 1000 for i in range(count)}
    bad_due = int((start + 6) * 1000) / 1000
    refused = f"http://127.0.0.1:{free_port()}/refused"  # nothing listens there
    # Another destination than the healthy one: another customer's endpoint.
    slow_rcv = AsyncReceiver(delay=lambda path: SLOW_SECONDS)
    await slow_rcv.start()
    try:
        await _isolation(stack_url, rcv, slow_rcv, refused, dues, bad_due, bad)
    finally:
        await slow_rcv.stop()


async def _isolation(stack_url: str, rcv: AsyncReceiver, slow_rcv: AsyncReceiver, refused: str,
                     dues: dict[str, float], bad_due: float, bad: int) -> None:
    count, spread, start = len(dues), 20.0, min(dues.values())
    bodies = [message("h", i, due, rcv.url + "/healthy") for i, due in enumerate(dues.values())]
    bodies += [message("s", i, bad_due, slow_rcv.url + "/slow") for i in range(bad)]
    bodies += [message("x", i, bad_due, refused) for i in range(bad)]
    seconds, statuses = await post_all(stack_url, bodies)
    print(f"  scheduled in {seconds:.2f} s {dict(statuses)}; first due {start - time.time():.1f} s later")
    await rcv.wait_for(lambda: sum(1 for a in rcv.arrivals if a.path == "/healthy") >= count,
                       timeout=start + spread + 30 - time.time())
    await asyncio.sleep(3)
    lateness = report("healthy", rcv, "h-", dues)
    if lateness:
        ordered = sorted(lateness)
        print(f"  healthy p90 {ordered[int(len(ordered) * 0.9) - 1]:.1f} ms")
        late_by_second(rcv, dues, bad_due)
    slow = sorted((a.at - bad_due) * 1000 for a in slow_rcv.arrivals)
    print(f"  slow endpoint: {len(slow)}/{bad} called by the end of the healthy run; "
          f"call start after due: {summary(slow)}")
    await report_states(stack_url, {"slow": [f"s-{i}" for i in range(bad)],
                                    "refused": [f"x-{i}" for i in range(bad)]})


def late_by_second(rcv: AsyncReceiver, dues: dict[str, float], bad_due: float, late_ms: float = 100) -> None:
    """How many healthy messages came more than `late_ms` late, by their due second relative to the
    bad ones' instant: those due beside the bad ones travel in the same SQS messages and share an
    invocation's threads with them, as they would on Lambda."""
    first: dict[str, float] = {}
    for a in rcv.arrivals:
        first.setdefault(a.body["id"], a.at)
    late = collections.Counter(int((due - bad_due) // 1) for i, due in dues.items()
                               if i in first and (first[i] - due) * 1000 > late_ms)
    shown = ", ".join(f"{second:+d} s: {n}" for second, n in sorted(late.items())) or "none"
    print(f"  healthy later than {late_ms:.0f} ms, by due second after the bad instant: {shown}")


async def report_states(stack_url: str, groups: dict[str, list[str]]) -> None:
    """Each group's messages by status, with their attempts (GET /messages/{id})."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CLIENTS)) as session:
        async def state(message_id: str) -> tuple[str, int]:
            async with session.get(f"{stack_url}/messages/{message_id}", headers=headers) as response:
                body = await response.json()
                return body["status"], body["attempts"]

        for name, ids in groups.items():
            states = await asyncio.gather(*(state(i) for i in ids))
            by_status = collections.Counter(status for status, _ in states)
            attempts = collections.Counter(n for _, n in states)
            print(f"  {name}: {dict(by_status)}; attempts {dict(sorted(attempts.items()))}")


async def against_stack(sections: list[str], counts: dict[str, int], redis_url: str | None,
                        shards: int | None) -> None:
    rcv = AsyncReceiver()
    settings = {"REDIS_URL": redis_url} if redis_url else {}
    if shards:
        settings["REDIS_SHARDS"] = str(shards)
    async with running(rcv, **settings) as stack:
        for name in sections:
            run = {"precision": precision, "burst": burst, "post-rate": post_rate,
                   "isolation": isolation}[name]
            await run(stack.url, rcv, **({"count": counts[name]} if name in counts else {}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["precision", "burst", "post-rate", "tick", "isolation"],
                        action="append", help="a section to run (isolation runs only when named)")
    parser.add_argument("--redis", choices=["plain", "cluster", "one-node"], default="plain",
                        help="the stack's Redis: a private redis-server (plain), a throwaway cluster of "
                             "three primaries (cluster), or one cluster node holding every slot (one-node)")
    parser.add_argument("--shards", type=int,
                        help="REDIS_SHARDS (default: 1 on a plain Redis, 3 on a cluster)")
    parser.add_argument("--burst-count", type=int, default=5000)
    parser.add_argument("--precision-count", type=int, default=2000)
    options = parser.parse_args()
    sections = options.only or ["precision", "burst", "post-rate", "tick"]
    counts = {"burst": options.burst_count, "precision": options.precision_count}
    print(f"cpus: {os.cpu_count()}, redis: {options.redis}")
    stack_sections = [s for s in sections if s != "tick"]
    cluster = None
    if options.redis != "plain":
        from emulator.redis_cluster import LocalCluster

        cluster = LocalCluster(one_node=options.redis == "one-node")
    try:
        if stack_sections:
            url = cluster.url if cluster else None
            asyncio.run(against_stack(stack_sections, counts, url, options.shards))
        if "tick" in sections:
            tick_with_pending(cluster.url if cluster else None, options.shards)
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
