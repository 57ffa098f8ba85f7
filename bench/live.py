"""Benchmark: one agent:started event fanned out to 1,000 WebSocket subscribers.

    .venv/bin/python bench/live.py [--subscribers 1000] [--rounds 5]

Starts a fresh local stack, registers an agent whose endpoint answers 202, connects the subscribers
to the local WebSocket gateway, then per round runs the agent (`POST /api/agents/{id}/run`) and
records when each subscriber receives `agent:started`. Prints p50/p99/max measured from the run's
start (its `startedAt`, when a dispatcher took it) and from the `POST .../run` call.
Target: p99 <= 500 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import datetime

import aiohttp
import requests
from support import AsyncReceiver, running, summary

from emulator.launcher import TOKEN, Stack

AGENT = "bench-live"


async def subscribe(session: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(url, heartbeat=None)
    await ws.send_json({"action": "subscribe-agent-updates", "agentId": AGENT})
    ack = json.loads((await ws.receive()).data)
    assert ack["event"] == "subscribed", ack
    return ws


async def started_at(ws: aiohttp.ClientWebSocketResponse) -> float:
    while True:
        frame = json.loads((await asyncio.wait_for(ws.receive(), 30)).data)
        if frame["event"] == "agent:started":
            return time.time()


def run_started(stack: Stack, run_id: str) -> float:
    """When the run started (its startedAt, set as the dispatcher took it), as epoch seconds."""
    run = stack.call("GET", f"/api/agents/{AGENT}/runs/{run_id}").json()["data"]
    return datetime.fromisoformat(run["startedAt"]).timestamp()


def finish(rcv: AsyncReceiver) -> None:
    call = rcv.arrivals[-1].body
    requests.post(f"{call['callbackUrl']}/complete", json={},
                  headers={"Authorization": f"Bearer {call['callbackToken']}"}, timeout=10)


async def measure(stack: Stack, rcv: AsyncReceiver, subscribers: int, rounds: int) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        for start in range(0, subscribers, 100):
            batch = min(100, subscribers - start)
            sockets += await asyncio.gather(*(subscribe(session, f"{stack.ws_url}?token={TOKEN}")
                                              for _ in range(batch)))
        print(f"{len(sockets)} subscribers connected")
        headers = {"Authorization": f"Bearer {TOKEN}"}
        for round_no in range(1, rounds + 1):
            waiting = asyncio.gather(*(started_at(ws) for ws in sockets), return_exceptions=True)
            calls = len(rcv.arrivals)
            t_post = time.time()
            async with session.post(f"{stack.url}/api/agents/{AGENT}/run", headers=headers) as r:
                assert r.status == 202, await r.text()
            arrivals = [a for a in await waiting if isinstance(a, float)]
            await rcv.wait_for(lambda n=calls: len(rcv.arrivals) > n, timeout=30)
            t_run = run_started(stack, rcv.arrivals[-1].body["runId"])
            print(f"round {round_no}: {len(arrivals)}/{len(sockets)} received; from run start: "
                  f"{summary([(a - t_run) * 1000 for a in arrivals])}; from the POST: "
                  f"{summary([(a - t_post) * 1000 for a in arrivals])}")
            # Later frames (agent:completed) are skipped by the next round's started_at.
            await asyncio.get_running_loop().run_in_executor(None, finish, rcv)
        for ws in sockets:
            await ws.close()


async def run(subscribers: int, rounds: int) -> None:
    rcv = AsyncReceiver(answer=lambda path, body: 202)
    async with running(rcv) as stack:
        agent = {"id": AGENT, "name": AGENT, "endpointUrl": rcv.url + "/agent"}
        response = stack.call("POST", "/api/agents", agent)
        assert response.status_code == 201, response.text
        await measure(stack, rcv, subscribers, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(run(args.subscribers, args.rounds))


if __name__ == "__main__":
    main()
