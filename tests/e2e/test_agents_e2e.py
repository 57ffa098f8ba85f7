"""Agents and live events through the real local stack, with a real agent endpoint and WebSocket clients."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import socket
import struct
import time
from typing import Any

import aiohttp
import pytest
import redis
import requests

from emulator.launcher import TOKEN, Stack
from tests.receiver import Receiver


@pytest.fixture
def agent_endpoint() -> Any:
    # /sync answers 200, /async 202 (the test reports back), /broken 500.
    answers = {"/sync": 200, "/async": 202, "/broken": 500}
    rcv = Receiver(responder=lambda path, n: (answers.get(path, 404), {}))
    yield rcv
    rcv.stop()


def register(stack: Stack, agent_id: str, url: str) -> None:
    response = stack.call("POST", "/api/agents", {"id": agent_id, "name": agent_id, "endpointUrl": url})
    assert response.status_code == 201, response.text


def runs(stack: Stack, agent_id: str) -> list[dict[str, Any]]:
    return list(stack.call("GET", f"/api/agents/{agent_id}/runs").json()["data"])


def report(call: dict[str, Any], kind: str, body: dict[str, Any]) -> requests.Response:
    headers = {"Authorization": f"Bearer {call['callbackToken']}"}
    return requests.post(f"{call['callbackUrl']}/{kind}", json=body, headers=headers, timeout=5)


def test_sync_agent_run_completes(stack: Stack, agent_endpoint: Receiver) -> None:
    register(stack, "e2e-sync", agent_endpoint.url + "/sync")
    assert stack.call("POST", "/api/agents/e2e-sync/run").status_code == 202
    [call] = agent_endpoint.wait_for(1, timeout=15)
    body = call.json()
    assert isinstance(body, dict) and body["agentId"] == "e2e-sync" and body["attempt"] == 1
    stack.wait_until("/api/agents/e2e-sync/runs", lambda r: r["data"][0]["status"] == "completed")
    agent = stack.call("GET", "/api/agents/e2e-sync").json()["data"]
    assert agent["status"] == "COMPLETED"


def test_failing_agent_is_retried_three_times_then_in_error(stack: Stack, agent_endpoint: Receiver) -> None:
    register(stack, "e2e-broken", agent_endpoint.url + "/broken")
    scheduled = stack.call("POST", "/api/agents/e2e-broken/schedule",
                           {"cronExpression": "0 0 1 1 *", "priority": "HIGH"})
    assert scheduled.status_code == 200, scheduled.text
    assert stack.call("POST", "/api/agents/e2e-broken/run").status_code == 202
    calls = agent_endpoint.wait_for(4, timeout=30)
    gaps = [round(b.at - a.at) for a, b in itertools.pairwise(calls)]
    assert gaps == [1, 2, 4]  # backoff 1 s, 2 s, 4 s
    answer = stack.wait_until("/api/agents/e2e-broken/schedule", lambda r: r["data"]["status"] == "ERROR")
    data = answer["data"]
    assert data["scheduleEnabled"] is False
    assert data["taskDetails"]["retryCount"] == 3
    assert "500" in data["taskDetails"]["lastError"]


async def _receive(ws: aiohttp.ClientWebSocketResponse, event: str, timeout: float = 20) -> dict[str, Any]:
    """The next frame named `event` (skipping others, such as status updates)."""
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads((await ws.receive()).data)
            if frame["event"] == event:
                return dict(frame["data"])


async def _async_run_with_subscribers(stack: Stack, endpoint: Receiver) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        refused = await session.get(stack.ws_url.replace("ws://", "http://"), headers={
            "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
        agent_ws = await session.ws_connect(f"{stack.ws_url}?token={TOKEN}")
        sched_ws = await session.ws_connect(stack.ws_url, headers={"Authorization": f"Bearer {TOKEN}"})
        await agent_ws.send_json({"action": "subscribe-agent-updates", "agentId": "e2e-async"})
        assert (await _receive(agent_ws, "subscribed"))["agentId"] == "e2e-async"
        await sched_ws.send_json({"action": "subscribe-scheduler-updates"})
        await _receive(sched_ws, "subscribed")
        await _receive(sched_ws, "scheduler:status")  # the current counts, at once

        async def blocking(fn: Any, *args: Any) -> Any:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

        await blocking(stack.call, "POST", "/api/agents/e2e-async/run")
        started = await _receive(agent_ws, "agent:started")
        call = (await blocking(endpoint.wait_for, 1, 10))[0].json()
        progress = {"progress": 50, "message": "halfway", "currentStep": "2", "totalSteps": 4}
        assert (await blocking(report, call, "progress", progress)).status_code == 200
        got_progress = await _receive(agent_ws, "agent:progress")
        done = await blocking(report, call, "complete", {"result": {"ok": 1}})
        assert done.status_code == 200
        completed = await _receive(agent_ws, "agent:completed")
        late = await blocking(report, call, "complete", {})
        status = await _receive(sched_ws, "scheduler:status")

        await blocking(stack.call, "POST", "/api/agents/e2e-async/schedule",
                                   {"cronExpression": "0 0 1 1 *", "priority": "LOW"})
        job = "/api/agents/e2e-async/schedule/e2e-async"
        await blocking(stack.call, "PATCH", f"{job}/pause")
        paused = await _receive(agent_ws, "agent:paused")
        await blocking(stack.call, "PATCH", f"{job}/resume")
        resumed = await _receive(agent_ws, "agent:resumed")
        for ws in (agent_ws, sched_ws):
            await ws.close()
        return {"refused": refused.status, "started": started, "progress": got_progress,
                "completed": completed, "late_report": late.status_code, "status": status,
                "paused": paused, "resumed": resumed}


def test_async_agent_reports_reach_websocket_subscribers_in_order(
    stack: Stack, agent_endpoint: Receiver
) -> None:
    register(stack, "e2e-async", agent_endpoint.url + "/async")
    seen = asyncio.run(_async_run_with_subscribers(stack, agent_endpoint))
    assert seen["refused"] == 401  # no token, no connection
    assert seen["started"]["agentId"] == "e2e-async"
    assert seen["progress"]["progress"] == 50 and seen["progress"]["message"] == "halfway"
    assert seen["completed"]["agentId"] == "e2e-async" and seen["completed"]["duration"] >= 0
    assert seen["late_report"] == 409  # the run is finished
    assert set(seen["status"]["stats"]) >= {"runningAgentsCount", "queuedTasksCount"}
    assert seen["paused"]["agentId"] == seen["resumed"]["agentId"] == "e2e-async"
    assert runs(stack, "e2e-async")[0]["status"] == "completed"


def _vanish_after_subscribing(stack: Stack, agent_id: str) -> None:
    """A client that subscribes, then drops its TCP connection without a close frame."""
    sock = socket.create_connection(("127.0.0.1", stack.ws_port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (f"GET /api?token={TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    )
    assert b" 101 " in sock.recv(4096).split(b"\r\n", 1)[0]
    payload = json.dumps({"action": "subscribe-agent-updates", "agentId": agent_id}).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked)
    assert b"subscribed" in sock.recv(4096)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # a reset, not a close frame


def test_a_vanished_client_is_cleaned_up(stack: Stack, agent_endpoint: Receiver) -> None:
    register(stack, "e2e-vanish", agent_endpoint.url + "/sync")
    store = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    topic = "punctual:ws:agent:e2e-vanish"
    _vanish_after_subscribing(stack, "e2e-vanish")
    deadline = time.monotonic() + 10
    while store.scard(topic) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.scard(topic) == 0
    assert list(store.scan_iter("punctual:ws:conn:*")) == []
