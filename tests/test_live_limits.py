"""Limits on the live events: agent:progress coalesced per run, WebSocket caps, connect tickets
and connections whose token was rotated away. Handlers as API Gateway invokes them, moto's
management API, real Redis, the fake clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from moto.apigatewaymanagementapi.models import apigatewaymanagementapi_backends

from chalicelib import services
from chalicelib.live import PROGRESS_WINDOW_MS, ManagementApi
from chalicelib.services import Services
from tests.conftest import TOKEN, Harness
from tests.receiver import Receiver
from tests.test_live import ENDPOINT, Ws, frames, ws_event


def rebuild(ws: Ws) -> None:
    """Services with the WebSocket publisher (not the recorder), sending through moto, on the
    harness's settings."""
    h = ws.h
    settings = replace(h.svc.settings, ws_management_endpoint=ENDPOINT)
    h.svc = Services.build(settings, clock=h.clock, redis_client=h.redis, sqs_client=h.sqs)
    services.install(h.svc)


@pytest.fixture
def ws(harness: Harness) -> Ws:
    made = Ws(harness)
    rebuild(made)
    return made


@pytest.fixture
def agent_endpoint() -> Iterator[Receiver]:
    endpoint = Receiver(responder=lambda path, n: (202, {}))  # works on and reports back
    yield endpoint
    endpoint.stop()


def start_run(ws: Ws, endpoint: Receiver, agent_id: str) -> tuple[str, str, str]:
    """Register an agent, subscribe a connection to it and run it; returns the connection, the
    run's report path and its callback token."""
    h = ws.h
    h.api("POST", "/api/agents", {"id": agent_id, "name": "A", "endpointUrl": endpoint.url})
    cid = ws.client()
    ws.send(cid, {"action": "subscribe-agent-updates", "agentId": agent_id})
    h.api("POST", f"/api/agents/{agent_id}/run")
    h.drain(hold_timeouts=True)
    request = endpoint.wait_for(1)[-1].json()
    assert isinstance(request, dict)
    return cid, f"/api/agents/{agent_id}/runs/{request['runId']}", request["callbackToken"]


def trailing_sends(h: Harness) -> list[str]:
    return [m["Body"] for m in h.receive() if json.loads(m["Body"]).get("kind") == "progress"]


def progress_frames(cid: str) -> list[Any]:
    return [f["data"]["progress"] for f in frames(cid) if f["event"] == "agent:progress"]


# -- agent:progress, coalesced per run --------------------------------------------------------


def test_a_burst_of_progress_reports_is_coalesced_last_value_wins(ws: Ws, agent_endpoint: Receiver) -> None:
    h = ws.h
    cid, report, token = start_run(ws, agent_endpoint, "busy")
    for percent in range(1, 21):  # twenty reports inside one window
        status, _ = h.api("POST", f"{report}/progress", {"progress": percent}, token=token)
        assert status == 200
    assert progress_frames(cid) == [1]  # the first at once; the rest are held
    [trailing] = trailing_sends(h)  # one trailing send, however many were held
    assert json.loads(trailing)["due"] == h.clock.now_ms() + PROGRESS_WINDOW_MS
    h.dispatch([trailing])  # waits on the fake clock until the window ends
    assert progress_frames(cid) == [1, 20]  # the last value held wins
    assert h.clock.now_ms() >= json.loads(trailing)["due"]
    # A report once a window has passed goes out at once.
    h.clock.advance(PROGRESS_WINDOW_MS)
    h.api("POST", f"{report}/progress", {"progress": 30}, token=token)
    assert progress_frames(cid) == [1, 20, 30] and trailing_sends(h) == []


def test_the_last_progress_report_goes_out_before_the_runs_end(ws: Ws, agent_endpoint: Receiver) -> None:
    h = ws.h
    cid, report, token = start_run(ws, agent_endpoint, "ending")
    for percent in (10, 90, 100):
        h.api("POST", f"{report}/progress", {"progress": percent}, token=token)
    h.api("POST", f"{report}/complete", {}, token=token)
    events = [f["event"] for f in frames(cid)[1:]]
    assert events == ["agent:started", "agent:progress", "agent:progress", "agent:completed"]
    assert progress_frames(cid) == [10, 100]  # the final one was not lost to the window
    # Its trailing send, when it comes, finds nothing left to send.
    h.dispatch(trailing_sends(h))
    assert progress_frames(cid) == [10, 100]


# -- caps ---------------------------------------------------------------------------------------


class Sent:
    """What the management API was asked to send to each connection, kept past its close (moto
    drops a closed connection's frames with it)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.data: dict[str, str] = {}
        send = ManagementApi.send

        def recording(api: ManagementApi, endpoint: str, connection_id: str, data: bytes) -> bool:
            self.data[connection_id] = self.data.get(connection_id, "") + data.decode()
            return send(api, endpoint, connection_id, data)

        monkeypatch.setattr(ManagementApi, "send", recording)

    def to(self, connection_id: str) -> str:
        return self.data.get(connection_id, "")


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    return Sent(monkeypatch)


def closed(connection_id: str) -> bool:
    backend = apigatewaymanagementapi_backends["123456789012"]["us-east-1"]
    return connection_id not in backend.connections


def test_the_connection_cap_per_token_is_answered(ws: Ws, sent: Sent) -> None:
    ws.h.configure(ws_max_connections_per_token=2)
    rebuild(ws)
    first, second = ws.client(), ws.client()
    cid, refused = ws.connect(query={"token": TOKEN})
    assert refused["statusCode"] == 429
    assert "connection cap reached" in json.loads(refused["body"])["error"]
    assert not ws.h.redis.exists(ws.h.svc.message_store.keys.ws_connection(cid))
    # Socket.IO: counted once authenticated, and refused with a CONNECT_ERROR frame.
    sio, answer = ws.connect(query={"EIO": "4", "transport": "websocket"})
    assert answer["statusCode"] == 200
    ws.invoke("ws_message", ws_event("$default", sio, body="40" + json.dumps({"token": TOKEN})))
    assert sent.to(sio).startswith('44{"message":"connection cap reached') and closed(sio)
    # A connection that goes frees its place.
    ws.invoke("ws_disconnect", ws_event("$disconnect", first))
    assert ws.connect(query={"token": TOKEN})[1]["statusCode"] == 200
    assert ws.send(second, {"action": "ping"})["event"] == "pong"


def test_the_subscription_cap_per_connection_is_answered(ws: Ws) -> None:
    ws.h.configure(ws_max_subscriptions_per_connection=2)
    rebuild(ws)
    for agent_id in ("a", "b", "c"):
        ws.h.api("POST", "/api/agents", {"id": agent_id, "name": "A", "endpointUrl": "http://127.0.0.1:9/"})
    cid = ws.client()
    assert ws.send(cid, {"action": "subscribe-agent-updates", "agentId": "a"})["event"] == "subscribed"
    assert ws.send(cid, {"action": "subscribe-scheduler-updates"})["event"] == "subscribed"
    refused = ws.send(cid, {"action": "subscribe-agent-updates", "agentId": "b"})
    assert refused["event"] == "error" and "subscription cap reached" in refused["data"]["error"]
    assert ws.h.redis.smembers(ws.h.svc.message_store.keys.ws_topic("agent:b")) == set()
    # Subscribing again to what it holds is no new subscription; unsubscribing makes room.
    assert ws.send(cid, {"action": "subscribe-agent-updates", "agentId": "a"})["event"] == "subscribed"
    ws.send(cid, {"action": "unsubscribe-agent-updates", "agentId": "a"})
    assert ws.send(cid, {"action": "subscribe-agent-updates", "agentId": "b"})["event"] == "subscribed"


# -- connect tickets -----------------------------------------------------------------------------


def ticket(h: Harness) -> str:
    status, body = h.api("POST", "/api/ws-ticket")
    assert status == 201 and set(body["data"]) == {"ticket", "expiresAt"}
    return str(body["data"]["ticket"])


def test_a_connect_ticket_works_once_and_not_after_it_expires(ws: Ws) -> None:
    h = ws.h
    assert h.api("POST", "/api/ws-ticket", token="wrong")[0] == 401
    one = ticket(h)
    assert TOKEN not in one
    cid, answer = ws.connect(query={"ticket": one})
    assert answer["statusCode"] == 200
    assert ws.send(cid, {"action": "ping"})["event"] == "pong"
    _, replay = ws.connect(query={"ticket": one})
    assert replay["statusCode"] == 401 and "already used" in json.loads(replay["body"])["error"]
    late = ticket(h)
    h.clock.advance(h.svc.settings.ws_ticket_seconds * 1000 + 1)
    _, expired = ws.connect(query={"ticket": late})
    assert expired["statusCode"] == 401 and "expired" in json.loads(expired["body"])["error"]
    _, made_up = ws.connect(query={"ticket": "made-up"})
    assert made_up["statusCode"] == 401


# -- a rotated API token ----------------------------------------------------------------------------


def test_connections_of_a_rotated_away_token_are_closed(ws: Ws, sent: Sent) -> None:
    h = ws.h
    h.api("POST", "/api/agents", {"id": "a", "name": "A", "endpointUrl": "http://127.0.0.1:9/"})
    active, idle = ws.client(), ws.client()
    ws.send(idle, {"action": "subscribe-agent-updates", "agentId": "a"})
    ws.h.configure(api_token="the-new-token-after-rotation")
    rebuild(ws)
    # On its next frame: told why, and closed.
    ws.invoke("ws_message", ws_event("$default", active, body=json.dumps({"action": "ping"})))
    told = json.loads(sent.to(active))
    assert told["event"] == "error" and "has been rotated" in told["data"]["error"] and closed(active)
    # One that sends nothing: closed by the per-minute sweep, its subscriptions gone with it.
    assert not closed(idle)
    h.tick()
    assert closed(idle)
    assert h.redis.smembers(h.svc.message_store.keys.ws_topic("agent:a")) == set()
    # The new token connects as ever; the old one no longer does.
    assert ws.connect(query={"token": "the-new-token-after-rotation"})[1]["statusCode"] == 200
    assert ws.connect(query={"token": TOKEN})[1]["statusCode"] == 401


def test_socketio_takes_a_ticket_in_its_connect_packet_and_its_heartbeat_is_no_subscription(
    ws: Ws, sent: Sent
) -> None:
    ws.h.configure(ws_max_subscriptions_per_connection=1)
    rebuild(ws)
    one = ticket(ws.h)
    first, _ = ws.connect(query={"EIO": "4", "transport": "websocket"})
    ws.invoke("ws_message", ws_event("$default", first, body="40" + json.dumps({"ticket": one})))
    assert sent.to(first) == "40" + json.dumps({"sid": first}, separators=(",", ":"))
    # Subscribed to the tick's heartbeat since $connect, it still has its one subscription to use.
    ws.invoke("ws_message", ws_event("$default", first, body='421["subscribe-scheduler-updates"]'))
    assert '431[{"success":true' in sent.to(first)
    replay, _ = ws.connect(query={"EIO": "4", "transport": "websocket"})
    ws.invoke("ws_message", ws_event("$default", replay, body="40" + json.dumps({"ticket": one})))
    assert sent.to(replay).startswith('44{"message":"connect ticket unknown or already used')
    assert closed(replay)
