"""The local WebSocket gateway end to end: a real WebSocket client, the app's own handlers,
the management API answered over HTTP through boto3, real Redis, a real agent endpoint."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
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
from emulator.ports import free_port
from emulator.ws_gateway import WsGateway
from tests.conftest import TOKEN, Harness
from tests.receiver import Receiver


class Gateway:
    """The gateway on a free port, in a thread with its own event loop."""

    def __init__(self, message: Any = None, **limits: float) -> None:
        self.port = free_port()
        handlers = app_module.app.handler_map
        self.gateway = WsGateway(
            handlers["ws_connect"], message or handlers["ws_message"], handlers["ws_disconnect"], **limits
        )
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


def _start(harness: Harness, message: Any = None, **limits: float) -> Gateway:
    gw = Gateway(message, **limits)
    settings = replace(harness.svc.settings, ws_management_endpoint=gw.url + "/api")
    harness.svc = Services.build(
        settings, clock=harness.clock, redis_client=harness.redis, sqs_client=harness.sqs
    )
    services.install(harness.svc)
    return gw


@pytest.fixture
def gateway(harness: Harness) -> Iterator[Gateway]:
    gw = _start(harness)
    yield gw
    gw.stop()


@pytest.fixture
def short_lived_gateway(harness: Harness) -> Iterator[Gateway]:
    """API Gateway's limits (10 min idle, 2 h in all), shrunk so a test can watch them act.

    The first message takes longer than the idle limit to handle, as a cold boto3
    client on a busy machine can: a client's frames count as activity when they
    arrive, whatever the handlers are doing.
    """
    slow_once = threading.Event()

    def message(event: dict[str, Any], context: Any) -> Any:
        if not slow_once.is_set():
            slow_once.set()
            threading.Event().wait(0.8)
        return app_module.app.handler_map["ws_message"](event, context)

    gw = _start(harness, message, idle_timeout_seconds=0.6, max_connection_seconds=1.5)
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

    assert asyncio.run(attempt("/api", {})) == 401
    assert asyncio.run(attempt("/api?token=nope", {})) == 401
    assert asyncio.run(attempt("/api", {"Authorization": f"Bearer {TOKEN}"})) == 101
    assert asyncio.run(attempt(f"/api?token={TOKEN}", {})) == 101
    # Only the stage's path, as on API Gateway: a URL that worked here alone would fail on AWS.
    assert asyncio.run(attempt(f"/?token={TOKEN}", {})) == 404


def test_a_subscriber_sees_a_run_through_the_gateway(gateway: Gateway, harness: Harness) -> None:
    agent = Receiver(responder=lambda path, n: (202, {}))
    harness.api("POST", "/api/agents", {"id": "agent-123", "name": "A", "endpointUrl": agent.url})

    async def scenario() -> tuple[list[dict], list[dict], list[dict]]:
        async with aiohttp.ClientSession() as session:
            async with (
                session.ws_connect(f"{gateway.url}/api?token={TOKEN}") as ws,
                session.ws_connect(f"{gateway.url}/api?token={TOKEN}") as watcher,
            ):
                await ws.send_json({"action": "subscribe-agent-updates", "agentId": "agent-123"})
                acks = await _receive(ws, 1)
                await watcher.send_json({"action": "subscribe-scheduler-updates"})
                acks += await _receive(watcher, 2)
                await ws.send_str("not json")
                acks += await _receive(ws, 1)

                def run() -> None:
                    harness.run_and_report("agent-123", agent, {"progress": 40, "message": "m"})

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
    keys = harness.svc.message_store.keys

    async def vanish() -> None:
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(f"{gateway.url}/api?token={TOKEN}")
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


def test_connections_are_closed_when_idle_or_too_old(short_lived_gateway: Gateway, harness: Harness) -> None:
    gateway = short_lived_gateway  # idle limit 0.6 s, maximum 1.5 s
    keys = harness.svc.message_store.keys

    async def until_closed(ws: aiohttp.ClientWebSocketResponse) -> list[Any]:
        """Read until the gateway closes the socket: the close frame, and how long the socket lived."""
        opened = asyncio.get_running_loop().time()
        while True:
            frame = await asyncio.wait_for(ws.receive(), 5)
            if frame.type != aiohttp.WSMsgType.TEXT:
                return [frame.type, frame.data, frame.extra, asyncio.get_running_loop().time() - opened]

    async def keep_pinging(ws: aiohttp.ClientWebSocketResponse) -> None:
        while not ws.closed:
            # The close may come just as this client sends.
            with contextlib.suppress(ConnectionResetError):
                await ws.send_json({"action": "ping"})
            await asyncio.sleep(0.15)

    async def scenario() -> list[list[Any]]:
        async with aiohttp.ClientSession() as session:
            async with (
                session.ws_connect(f"{gateway.url}/api?token={TOKEN}") as quiet,
                session.ws_connect(f"{gateway.url}/api?token={TOKEN}") as chatty,
            ):
                pinging = asyncio.create_task(keep_pinging(chatty))
                closes = await asyncio.gather(until_closed(quiet), until_closed(chatty))
                pinging.cancel()
                return closes

    quiet, chatty = asyncio.run(scenario())
    # The quiet client sent nothing: closed after the idle limit, as API Gateway does.
    assert quiet[:3] == [aiohttp.WSMsgType.CLOSE, 1001, "going away"]
    assert 0.5 <= quiet[3] < 1.2
    # The chatty one outlived the idle limit by sending, but not the maximum duration.
    assert chatty[:3] == [aiohttp.WSMsgType.CLOSE, 1001, "going away"]
    assert 1.2 <= chatty[3] < 4
    # $disconnect ran for both: their Redis records are gone.
    waited = threading.Event()
    for _ in range(100):
        if not harness.redis.keys(keys.ws_connection("*")):
            break
        waited.wait(0.05)
    assert harness.redis.keys(keys.ws_connection("*")) == []


def test_a_binary_frame_closes_the_connection_as_api_gateway_does(gateway: Gateway) -> None:
    """API Gateway takes text frames only and disconnects a client that sends binary (1003).
    Ignoring the frame instead would leave a client that only sends binary open but idle to
    the app, whose records of it expire: a subscriber that silently gets nothing."""

    async def send_binary() -> tuple[aiohttp.WSMsgType, int | None]:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{gateway.url}/api?token={TOKEN}") as ws:
                await ws.send_bytes(b'{"action": "ping"}')
                frame = await asyncio.wait_for(ws.receive(), 10)
                return frame.type, ws.close_code

    assert asyncio.run(send_binary()) == (aiohttp.WSMsgType.CLOSE, 1003)


def test_a_client_that_stops_reading_is_cut_off_not_waited_for(harness: Harness) -> None:
    """post_to_connection does not wait for the client; a send to one that has stopped reading
    would otherwise hold the publisher (a dispatcher, an agent's /progress call) for a minute."""
    gw = _start(harness, send_timeout_seconds=0.3)
    client = socket.create_connection(("127.0.0.1", gw.port))
    try:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        key = base64.b64encode(b"0123456789abcdef").decode()
        client.sendall((f"GET /api?token={TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        assert b" 101 " in client.recv(1024).split(b"\r\n")[0]  # and it reads nothing more
        [connection_id] = wait_for(lambda: list(gw.gateway._connections), 10)
        record = harness.svc.message_store.keys.ws_connection(connection_id)
        assert harness.redis.exists(record)
        frame = {"event": "agent:progress", "data": {"message": "x" * 100_000}}
        sent = 0
        while harness.redis.exists(record) and sent < 200:
            harness.svc.events._publisher.send_to([(connection_id, "json")], frame)  # type: ignore[attr-defined]
            sent += 1
        # Its buffers filled after some megabytes; the next send was answered as gone, and the
        # app dropped its record, as on a 410 from API Gateway.
        assert not harness.redis.exists(record) and 10 < sent < 200
        assert wait_for(lambda: not gw.gateway._connections, 10)
    finally:
        client.close()
        gw.stop()


def wait_for(probe: Any, seconds: float) -> Any:
    """Poll `probe` until it returns something true (the gateway runs on its own thread)."""
    done = threading.Event()
    for _ in range(int(seconds / 0.02)):
        if value := probe():
            return value
        done.wait(0.02)
    return probe()
