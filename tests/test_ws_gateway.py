"""The local WebSocket gateway end to end: a real WebSocket client, the app's own handlers,
the management API answered over HTTP through boto3, real Redis, a real agent endpoint."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import app as app_module
from chalicelib import services
from chalicelib.services import Services
from localstack.ws_gateway import WsGateway
from tests.conftest import TOKEN, Harness
from tests.receiver import Receiver
from tests.redis_server import free_port


class Gateway:
    """The gateway on a free port, in a thread with its own event loop."""

    def __init__(self) -> None:
        self.port = free_port()
        handlers = app_module.app.handler_map
        self.gateway = WsGateway(handlers["ws_connect"], handlers["ws_message"], handlers["ws_disconnect"])
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(self.gateway.app())
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.runner.setup())
            self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def gateway(harness: Harness) -> Iterator[Gateway]:
    gw = Gateway()
    settings = replace(harness.svc.settings, ws_management_endpoint=gw.url + "/api")
    harness.svc = Services.build(
        settings, clock=harness.clock, redis_client=harness.redis, sqs_client=harness.sqs
    )
    services.install(harness.svc)
    yield gw
    gw.stop()


async def _receive(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    return [json.loads((await asyncio.wait_for(ws.receive(), 10)).data) for _ in range(count)]


def test_refused_without_the_token(gateway: Gateway) -> None:
    async def attempt(query: str, headers: dict[str, str]) -> int:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(gateway.url + query, headers=headers):
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    assert asyncio.run(attempt("/", {})) == 401
    assert asyncio.run(attempt("/?token=nope", {})) == 401
    assert asyncio.run(attempt("/", {"Authorization": f"Bearer {TOKEN}"})) == 101
    assert asyncio.run(attempt(f"/?token={TOKEN}", {})) == 101


def test_a_subscriber_sees_a_run_through_the_gateway(gateway: Gateway, harness: Harness) -> None:
    agent = Receiver(responder=lambda path, n: (202, {}))
    harness.api("POST", "/api/agents", {"id": "agent-123", "name": "A", "endpointUrl": agent.url})

    async def scenario() -> tuple[list[dict], list[dict], list[dict]]:
        async with aiohttp.ClientSession() as session:
            async with (
                session.ws_connect(f"{gateway.url}/?token={TOKEN}") as ws,
                session.ws_connect(f"{gateway.url}/?token={TOKEN}") as watcher,
            ):
                await ws.send_json({"action": "subscribe-agent-updates", "agentId": "agent-123"})
                acks = await _receive(ws, 1)
                await watcher.send_json({"action": "subscribe-scheduler-updates"})
                acks += await _receive(watcher, 2)
                await ws.send_str("not json")
                acks += await _receive(ws, 1)

                def run() -> None:
                    harness.api("POST", "/api/agents/agent-123/run")
                    harness.drain(hold_timeouts=True)
                    request = agent.wait_for(1)[0].json()
                    base = f"/api/agents/agent-123/runs/{request['runId']}"
                    token = request["callbackToken"]
                    harness.api("POST", f"{base}/progress", {"progress": 40, "message": "m"}, token=token)
                    harness.api("POST", f"{base}/complete", {}, token=token)

                await asyncio.get_running_loop().run_in_executor(None, run)
                events = await _receive(ws, 3)
                status = await _receive(watcher, 1)
                return acks, events, status

    try:
        acks, events, status = asyncio.run(scenario())
    finally:
        agent.stop()
    assert acks[0] == {"event": "subscribed", "data": {"topic": "agent-updates", "agentId": "agent-123"}}
    assert acks[1]["event"] == "subscribed" and acks[2]["event"] == "scheduler:status"
    assert acks[3]["event"] == "error"
    assert [e["event"] for e in events] == ["agent:started", "agent:progress", "agent:completed"]
    assert events[1]["data"]["progress"] == 40
    assert status[0]["event"] == "scheduler:status"


def test_a_vanished_client_is_cleaned_up(gateway: Gateway, harness: Harness) -> None:
    harness.api("POST", "/api/agents", {"id": "v", "name": "A", "endpointUrl": "http://127.0.0.1:9/"})
    keys = harness.svc.store.keys

    async def vanish() -> None:
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(f"{gateway.url}/?token={TOKEN}")
        await ws.send_json({"action": "subscribe-agent-updates", "agentId": "v"})
        await _receive(ws, 1)
        # Drop the TCP connection without a close frame.
        transport = ws._response.connection.transport  # type: ignore[union-attr]
        transport.abort()
        await session.close()

    asyncio.run(vanish())
    topic = keys.ws_topic("agent:v")

    def cleaned() -> bool:
        return harness.redis.scard(topic) == 0

    done = threading.Event()
    for _ in range(200):  # the gateway notices the reset and runs $disconnect
        if cleaned():
            done.set()
            break
        done.wait(0.05)
    assert cleaned()
