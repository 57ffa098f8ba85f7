"""Benchmark: 10,000 agents on `* * * * *` with MAX_CONCURRENT_AGENTS=50.

    .venv/bin/python bench/agents.py [--agents 10000] [--limit 50]

Starts a fresh local stack (ticker idle: this script runs the tick itself, in-process against the
stack's Redis and SQS, to time it), registers the agents and their schedules through the API, ticks
about 20 s before the next minute, and records when each run's request reaches the agent endpoint
(which answers 200 at once). Prints the tick's time and the start lateness (arrival - scheduledFor)
of the first `limit` runs and of all of them. Target: p99 <= 50 ms for the first 50.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from datetime import datetime
from typing import Any

import aiohttp
from support import AsyncReceiver, running, summary

from emulator.launcher import TOKEN, Stack
from emulator.ports import free_port


async def register(stack: Stack, count: int, url: str, clients: int = 16) -> float:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    todo = iter(range(count))

    async def client(session: aiohttp.ClientSession) -> None:
        for i in todo:
            agent = {"id": f"a{i}", "name": f"agent {i}", "endpointUrl": url}
            async with session.post(stack.url + "/api/agents", json=agent, headers=headers) as r:
                assert r.status == 201, await r.text()
            schedule = {"cronExpression": "* * * * *", "priority": "NORMAL"}
            path = f"{stack.url}/api/agents/a{i}/schedule"
            async with session.post(path, json=schedule, headers=headers) as r:
                assert r.status == 200, await r.text()

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return time.perf_counter() - started


def services_of(stack: Stack, moto_port: int) -> Any:
    from chalicelib.config import Settings
    from chalicelib.services import Services

    # The tick runs in this process: keep its log lines and metrics off the report.
    os.environ.update(LOG_LEVEL="WARNING", POWERTOOLS_METRICS_DISABLED="true")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        os.environ[name] = stack.env[name]  # boto3 reads credentials from the process
    endpoint = stack.env.get("AWS_ENDPOINT_URL") or f"http://127.0.0.1:{moto_port}"
    env = {**stack.env, "REDIS_URL": stack.redis_url,
           "AWS_ENDPOINT_URL": endpoint, "PUNCTUAL_LOCAL": "1"}
    return Services.build(Settings.from_env(env))


async def run(count: int, limit: int) -> None:
    moto_port = free_port()
    rcv = AsyncReceiver()
    async with running(rcv, MAX_CONCURRENT_AGENTS=str(limit), TICK_INTERVAL_SECONDS="3600",
                       MOTO_PORT=str(moto_port), AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                       AWS_REGION="us-east-1") as stack:
        # Register just after a minute starts, so every first slot is the next minute.
        await asyncio.sleep(61 - time.time() % 60)
        seconds = await register(stack, count, rcv.url + "/agent")
        print(f"registered {count} agents and schedules in {seconds:.1f} s ({2 * count / seconds:.0f} req/s)")
        boundary = (time.time() // 60 + 1) * 60
        await asyncio.sleep(max(0.0, boundary - 20 - time.time()))
        svc = services_of(stack, moto_port)
        t0 = time.perf_counter()
        result = svc.scheduler.tick(svc.clock.now_ms() + 50_000)
        print(f"tick: {(time.perf_counter() - t0) * 1000:.0f} ms for {result.claimed} due runs "
              f"({result.to_dict()})")
        await rcv.wait_for(lambda: len(rcv.arrivals) >= count, timeout=boundary + 600 - time.time())
        arrivals = sorted(rcv.arrivals, key=lambda a: a.at)
        lateness = [
            (a.at - datetime.fromisoformat(a.body["scheduledFor"]).timestamp()) * 1000 for a in arrivals
        ]
        print(f"runs started: {len(arrivals)}/{count}")
        print(f"start lateness, first {limit}: {summary(lateness[:limit])}")
        print(f"start lateness, all: {summary(lateness)}")
        if arrivals:
            print(f"all {len(arrivals)} started within {arrivals[-1].at - boundary:.1f} s of the slot")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--limit", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(run(args.agents, args.limit))


if __name__ == "__main__":
    main()
