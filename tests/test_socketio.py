"""Socket.IO v4 over the local WebSocket gateway: python-socketio's own client, and raw Engine.IO
frames for what a well-behaved client never sends. The open packet goes through the fan-out queue
(moto), which a pump feeds to the fan-out handler as Lambda's event source would."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import aiohttp
import engineio.base_client
import pytest
import socketio

from chalicelib.socketio_routes import CONNECT_TIMEOUT_MS, PING_INTERVAL_MS, PING_TIMEOUT_MS
from tests.conftest import TOKEN, Harness
from tests.receiver import Receiver
from tests.test_ws_gateway import Gateway, _start


class FanoutPump:
    """Lambda's event source for the fan-out queue: what arrives is handed to the handler."""

    def __init__(self, harness: Harness) -> None:
        self.h = harness
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        url = self.h.fanout_url
        while not self.stopping.wait(0.01):
            got = self.h.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1).get("Messages", [])
            for m in got:
                self.h.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
                self.h.dispatch([m["Body"]], "fanout")

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)


@pytest.fixture
def gateway(harness: Harness) -> Iterator[Gateway]:
    gw = _start(harness)
    pump = FanoutPump(harness)
    yield gw
    pump.stop()
    gw.stop()


@pytest.fixture(autouse=True)
def no_trailing_slash(monkeypatch: pytest.MonkeyPatch) -> None:
    """python-socketio's client always ends the path with '/' (socket.io-client has
    addTrailingSlash: false); the gateway serves the stage's path only, as API Gateway does."""
    original = engineio.base_client.BaseClient._get_engineio_url

    def url(self: Any, *args: Any) -> str:
        return str(original(self, *args)).replace("/?", "?", 1)

    monkeypatch.setattr(engineio.base_client.BaseClient, "_get_engineio_url", url)


async def _client(gateway: Gateway, token: str = TOKEN) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(gateway.url, socketio_path="api", transports=["websocket"], auth={"token": token},
                         wait_timeout=10)
    return client


def test_the_spec_client_connects_subscribes_and_sees_a_run(gateway: Gateway, harness: Harness) -> None:
    agent = Receiver(responder=lambda path, n: (202, {}))
    harness.api("POST", "/api/agents", {"id": "agent-123", "name": "A", "endpointUrl": agent.url})

    async def scenario() -> tuple[Any, Any, list[tuple[str, Any]], Any]:
        with pytest.raises(socketio.exceptions.ConnectionError, match="failed to connect"):  # CONNECT_ERROR
            await _client(gateway, "wrong")
        client = await _client(gateway)
        seen: list[tuple[str, Any]] = []
        done = asyncio.Event()
        for name in ("agent:started", "agent:progress", "agent:completed", "scheduler:status"):
            client.on(name, lambda data, name=name: seen.append((name, data)))
        client.on("agent:completed", lambda data: (seen.append(("agent:completed", data)), done.set()))
        ack = await client.call("subscribe-agent-updates", "agent-123", timeout=10)
        refused = await client.call("subscribe-agent-updates", "ghost", timeout=10)

        def run() -> None:
            harness.run_and_report("agent-123", agent, {"progress": 50, "message": "half"})

        await asyncio.get_running_loop().run_in_executor(None, run)
        await asyncio.wait_for(done.wait(), 10)
        sid = client.get_sid()
        await client.disconnect()
        return ack, refused, seen, sid

    try:
        ack, refused, seen, sid = asyncio.run(scenario())
    finally:
        agent.stop()
    assert ack == {"success": True, "data": {"topic": "agent-updates", "agentId": "agent-123"}}
    assert refused == {"success": False, "error": "agent 'ghost' not found"}
    names = [name for name, _ in seen]
    assert names == ["agent:started", "agent:progress", "agent:completed"]
    started, progress, completed = (data for _, data in seen)
    # The spec's payloads, as the listener's one argument.
    assert set(started) == {"agentId", "jobId", "status", "timestamp"} and started["status"] == "started"
    assert progress["progress"] == 50 and progress["message"] == "half"
    assert completed["status"] == "completed" and isinstance(completed["duration"], int)
    assert sid  # the Socket.IO session id from the CONNECT answer


def test_scheduler_updates_come_after_subscribing(gateway: Gateway) -> None:
    async def scenario() -> Any:
        client = await _client(gateway)
        status: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        client.on("scheduler:status", lambda data: status.done() or status.set_result(data))
        await client.emit("subscribe-scheduler-updates")  # no ack asked: none sent
        data = await asyncio.wait_for(status, 10)
        assert await client.call("unsubscribe-scheduler-updates", timeout=10) == {
            "success": True, "data": {"topic": "scheduler-updates"}}
        await client.disconnect()
        return data

    data = asyncio.run(scenario())
    assert set(data) == {"stats", "timestamp"} and data["stats"]["maxConcurrentAgents"] == 5


# -- raw Engine.IO frames ------------------------------------------------------------------------


async def _raw(gateway: Gateway, session: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(f"{gateway.url}/api?EIO=4&transport=websocket")
    return ws


async def _text(ws: aiohttp.ClientWebSocketResponse) -> str:
    message = await asyncio.wait_for(ws.receive(), 10)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    return str(message.data)


async def _closed(ws: aiohttp.ClientWebSocketResponse) -> bool:
    message = await asyncio.wait_for(ws.receive(), 10)
    return message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)


def test_handshake_heartbeat_and_the_connect_timeout(gateway: Gateway, harness: Harness) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await _raw(gateway, session)
            opened = await _text(ws)
            assert opened[0] == "0"
            handshake = json.loads(opened[1:])
            assert handshake["upgrades"] == [] and handshake["maxPayload"] == 128 * 1024
            assert handshake["pingInterval"] == PING_INTERVAL_MS
            assert handshake["pingTimeout"] == PING_TIMEOUT_MS
            idle = await _raw(gateway, session)  # never sends its CONNECT
            assert (await _text(idle))[0] == "0"
            await ws.send_str(f'40{{"token":"{TOKEN}"}}')
            assert json.loads((await _text(ws))[2:]) == {"sid": handshake["sid"]}
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, harness.tick)
            assert await _text(ws) == "2"  # the tick pings
            await ws.send_str("3")
            # Past the CONNECT timeout, the next tick closes the one that never authenticated.
            harness.clock.advance(CONNECT_TIMEOUT_MS)
            await loop.run_in_executor(None, harness.tick)
            assert await _closed(idle)
            assert await _text(ws) == "2"
            await ws.close()

    asyncio.run(scenario())


BAD_INPUT = [
    ("not a packet", "x"),
    ("empty", ""),
    ("engine type out of range", "9"),
    ("a ping from the client", "2"),
    ("base64 binary", "bAAEC"),
    ("message without a packet", "4"),
    ("socket.io type out of range", "49"),
    ("malformed JSON", '42["subscribe-agent-updates",'),
    ("deep JSON", "42" + "[" * 5000),
    ("binary event", '451-["x",{"_placeholder":true,"num":0}]'),
    ("ack from the client", "431[]"),
    ("disconnect", "41"),
    ("close", "1"),
]


@pytest.mark.parametrize("name, frame", BAD_INPUT, ids=[name for name, _ in BAD_INPUT])
def test_bad_input_closes_the_connection_and_nothing_breaks(
    gateway: Gateway, caplog: pytest.LogCaptureFixture, name: str, frame: str
) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await _raw(gateway, session)
            await _text(ws)
            await ws.send_str(f'40{{"token":"{TOKEN}"}}')
            await _text(ws)
            await ws.send_str(frame)
            assert await _closed(ws), name
            # The gateway still serves, and nothing was logged as an error.
            again = await _raw(gateway, session)
            assert (await _text(again))[0] == "0"
            await again.close()

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_before_connect_nothing_but_connect_is_taken(gateway: Gateway) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            early = await _raw(gateway, session)
            await _text(early)
            await early.send_str('42["subscribe-scheduler-updates"]')
            assert await _closed(early)
            refused = await _raw(gateway, session)
            await _text(refused)
            await refused.send_str('40{"token":"wrong"}')
            assert json.loads((await _text(refused))[2:])["message"].startswith("missing or invalid token")
            assert await _closed(refused)
            anonymous = await _raw(gateway, session)
            await _text(anonymous)
            await anonymous.send_str("40")
            assert (await _text(anonymous)).startswith("44")
            assert await _closed(anonymous)

    asyncio.run(scenario())


def test_defined_answers_that_keep_the_connection(gateway: Gateway) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await _raw(gateway, session)
            sid = json.loads((await _text(ws))[1:])["sid"]
            await ws.send_str(f'40{{"token":"{TOKEN}"}}')
            assert await _text(ws) == f'40{{"sid":"{sid}"}}'
            await ws.send_str(f'40{{"token":"{TOKEN}"}}')  # repeated: answered as the first
            assert await _text(ws) == f'40{{"sid":"{sid}"}}'
            await ws.send_str('40/api,{"token":"x"}')  # the stage given as a namespace
            answer = await _text(ws)
            assert answer.startswith("44/api,") and "path: '/api'" in answer
            await ws.send_str('42["dance"]')
            assert json.loads((await _text(ws))[2:]) == ["error", {"error": _unknown("dance")}]
            await ws.send_str('427["dance"]')
            assert json.loads((await _text(ws))[3:]) == [{"success": False, "error": _unknown("dance")}]
            await ws.send_str("42[]")
            assert "an event needs a name" in await _text(ws)
            await ws.send_str("42" + json.dumps(["subscribe-agent-updates", "x" * 100_000]))
            assert len(await _text(ws)) < 400  # the value is not repeated back whole
            await ws.send_str("42" + json.dumps(["dance", "x" * 200_000]))  # over 128 KB
            assert await _closed(ws)

    asyncio.run(scenario())


def _unknown(action: str) -> str:
    return (f"unknown action {action!r}; use one of ping, subscribe-agent-updates, "
            "subscribe-scheduler-updates, unsubscribe-agent-updates, unsubscribe-scheduler-updates")
