"""Live events: the $connect/$default/$disconnect handlers and the fan-out, with moto's management API."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3.session
import pytest
from botocore.stub import Stubber
from moto.apigatewaymanagementapi.models import apigatewaymanagementapi_backends

from chalicelib import live, services
from chalicelib.live import ManagementApi
from chalicelib.services import Services
from tests.conftest import TOKEN, Harness
from tests.receiver import Receiver

ENDPOINT = "https://abc123.execute-api.us-east-1.amazonaws.com/api"  # moto answers this shape


def ws_event(
    route: str,
    connection_id: str,
    body: str | None = None,
    query: dict | None = None,
    headers: dict | None = None,
) -> dict[str, Any]:
    """API Gateway's WebSocket event, as the local gateway builds it too."""
    event_type = {"$connect": "CONNECT", "$disconnect": "DISCONNECT"}.get(route, "MESSAGE")
    event: dict[str, Any] = {
        "requestContext": {
            "routeKey": route,
            "eventType": event_type,
            "connectionId": connection_id,
            "connectedAt": 1_893_456_000_000,
            "domainName": "ws.punctual.test",
            "stage": "api",
            "apiId": "local",
            "requestId": uuid.uuid4().hex,
            "messageDirection": "IN",
        },
        "isBase64Encoded": False,
    }
    if route == "$connect":
        event["queryStringParameters"] = query
        event["headers"] = headers or {}
    if body is not None:
        event["body"] = body
    return event


def frames(connection_id: str) -> list[dict[str, Any]]:
    """Every frame sent to a connection, in order (moto keeps them as one byte string)."""
    backend = apigatewaymanagementapi_backends["123456789012"]["us-east-1"]
    conn = backend.connections.get(connection_id)
    text = conn.data.decode() if conn else ""
    out, at, decoder = [], 0, json.JSONDecoder()
    while at < len(text):
        value, at = decoder.raw_decode(text, at)
        out.append(value)
    return out


class Ws:
    def __init__(self, harness: Harness) -> None:
        self.h = harness

    def invoke(self, handler: str, event: dict[str, Any]) -> Any:
        return self.h.client.lambda_.invoke(handler, event).payload

    def connect(self, query: dict | None = None, headers: dict | None = None) -> tuple[str, Any]:
        cid = "c-" + uuid.uuid4().hex[:10]
        return cid, self.invoke("ws_connect", ws_event("$connect", cid, query=query, headers=headers))

    def client(self) -> str:
        cid, answer = self.connect(query={"token": TOKEN})
        assert answer["statusCode"] == 200
        return cid

    def send(self, cid: str, frame: Any) -> dict[str, Any]:
        body = frame if isinstance(frame, str) else json.dumps(frame)
        before = len(frames(cid))
        self.invoke("ws_message", ws_event("$default", cid, body=body))
        return frames(cid)[before]


@pytest.fixture
def ws(harness: Harness) -> Iterator[Ws]:
    from dataclasses import replace

    settings = replace(harness.svc.settings, ws_management_endpoint=ENDPOINT)
    harness.svc = Services.build(
        settings, clock=harness.clock, redis_client=harness.redis, sqs_client=harness.sqs
    )
    services.install(harness.svc)
    yield Ws(harness)


@pytest.mark.parametrize(
    "query, headers, status",
    [
        (None, None, 401),
        ({"token": "wrong"}, None, 401),
        (None, {"Authorization": "Bearer wrong"}, 401),
        ({"token": TOKEN}, None, 200),
        (None, {"Authorization": f"Bearer {TOKEN}"}, 200),
    ],
)
def test_connect_needs_the_token(ws: Ws, query: dict | None, headers: dict | None, status: int) -> None:
    cid, answer = ws.connect(query, headers)
    assert answer["statusCode"] == status
    assert ws.h.redis.exists(ws.h.svc.message_store.keys.ws_connection(cid)) == (status == 200)


def test_protocol_answers_and_errors(ws: Ws) -> None:
    cid = ws.client()
    assert ws.send(cid, {"action": "ping"}) == {
        "event": "pong",
        "data": {"timestamp": "2030-01-01T00:00:00.000Z"},
    }
    for frame, fragment in [
        ("not json", "not JSON"),
        ("[1]", "JSON object"),
        ({"action": "dance"}, "unknown action 'dance'"),
        ({"nothing": 1}, "unknown action None"),
        ({"action": "subscribe-agent-updates"}, "agentId is required"),
        ({"action": "subscribe-agent-updates", "agentId": "ghost"}, "agent 'ghost' not found"),
        ({"action": "unsubscribe-agent-updates"}, "agentId is required"),
        ("[" * 5000, "not JSON"),  # deeper than Python's recursion limit
        # JSON's escapes allow a lone surrogate, which Redis's client cannot encode.
        ({"action": "subscribe-agent-updates", "agentId": "\ud800"}, "not found"),
        # Repeated back whole, a value near API Gateway's 128 KB frame limit makes a reply over it.
        ({"action": "x" * 100_000}, "unknown action 'xxxx"),
    ]:
        answer = ws.send(cid, frame)
        assert answer["event"] == "error" and fragment in answer["data"]["error"], answer
        assert len(answer["data"]["error"]) < 300
    unsubscribe = {"action": "unsubscribe-agent-updates", "agentId": "\ud800"}
    assert ws.send(cid, unsubscribe)["event"] == "unsubscribed"  # it was never subscribed to
    # The connection stays usable after errors.
    assert ws.send(cid, {"action": "ping"})["event"] == "pong"


def test_agent_subscriber_gets_a_runs_events_in_order(ws: Ws) -> None:
    agent = Receiver(responder=lambda path, n: (202, {}))
    try:
        h = ws.h
        h.api("POST", "/api/agents", {"id": "agent-123", "name": "A", "endpointUrl": agent.url})
        cid = ws.client()
        other = ws.client()
        assert ws.send(cid, {"action": "subscribe-agent-updates", "agentId": "agent-123"}) == {
            "event": "subscribed",
            "data": {"topic": "agent-updates", "agentId": "agent-123"},
        }
        h.api("POST", "/api/agents/agent-123/run")
        h.drain(hold_timeouts=True)
        request = agent.wait_for(1)[0].json()
        report = f"/api/agents/agent-123/runs/{request['runId']}"
        token = request["callbackToken"]
        h.clock.advance(1_500)
        h.api(
            "POST",
            f"{report}/progress",
            {"progress": 50, "message": "half", "currentStep": "2", "totalSteps": 4},
            token=token,
        )
        h.clock.advance(1_500)
        h.api("POST", f"{report}/complete", {}, token=token)
        got = frames(cid)[1:]
        assert [f["event"] for f in got] == ["agent:started", "agent:progress", "agent:completed"]
        assert got[0]["data"] == {
            "agentId": "agent-123",
            "jobId": "agent-123",
            "status": "started",
            "timestamp": "2030-01-01T00:00:00.000Z",
        }
        assert got[1]["data"] == {
            "agentId": "agent-123",
            "jobId": "agent-123",
            "progress": 50,
            "message": "half",
            "currentStep": "2",
            "totalSteps": 4,
            "timestamp": "2030-01-01T00:00:01.500Z",
        }
        assert got[2]["data"] == {
            "agentId": "agent-123",
            "jobId": "agent-123",
            "status": "completed",
            "duration": 3_000,
            "timestamp": "2030-01-01T00:00:03.000Z",
        }
        assert frames(other) == []  # not subscribed, nothing sent
        # After unsubscribing, nothing more arrives.
        ws.send(cid, {"action": "unsubscribe-agent-updates", "agentId": "agent-123"})
        count = len(frames(cid))
        h.api("POST", "/api/agents/agent-123/schedule", {"cronExpression": "* * * * *"})
        h.api("PATCH", "/api/agents/agent-123/schedule/agent-123/pause")
        assert len(frames(cid)) == count
    finally:
        agent.stop()


def test_a_cron_slot_tells_those_subscribed_when_it_fired(ws: Ws) -> None:
    # A slot that takes a free concurrency slot is begun by the script that fires it, which also
    # reads who listens; the start event goes to them, and a subscriber whose records expired
    # is dropped as on every other send.
    agent = Receiver(responder=lambda path, n: (200, {}))
    try:
        h = ws.h
        h.api("POST", "/api/agents", {"id": "cron", "name": "A", "endpointUrl": agent.url})
        h.api("POST", "/api/agents/cron/schedule", {"cronExpression": "* * * * *"})
        watcher, ghost, counts = ws.client(), ws.client(), ws.client()
        for cid in (watcher, ghost):
            ws.send(cid, {"action": "subscribe-agent-updates", "agentId": "cron"})
        ws.send(counts, {"action": "subscribe-scheduler-updates"})
        keys = h.svc.message_store.keys
        h.redis.delete(keys.ws_connection(ghost))
        h.redis.delete(keys.ws_status_lock)
        h.tick()
        h.drain()
        assert agent.wait_for(1)[0].json()["scheduledFor"] == "2030-01-01T00:01:00.000Z"
        assert [f["event"] for f in frames(watcher)[1:]] == ["agent:started", "agent:completed"]
        assert frames(watcher)[1]["data"]["timestamp"] == "2030-01-01T00:01:00.000Z"
        assert h.redis.smembers(keys.ws_topic("agent:cron")) == {watcher}
        assert any(s["runningAgentsCount"] == 1 for s in status_frames(counts))
    finally:
        agent.stop()


def test_pause_and_resume_reach_subscribers(ws: Ws) -> None:
    h = ws.h
    h.api("POST", "/api/agents", {"id": "pr", "name": "A", "endpointUrl": "http://127.0.0.1:9/"})
    h.api("POST", "/api/agents/pr/schedule", {"cronExpression": "* * * * *", "jobId": "job-456"})
    cid = ws.client()
    ws.send(cid, {"action": "subscribe-agent-updates", "agentId": "pr"})
    h.api("PATCH", "/api/agents/pr/schedule/job-456/pause")
    h.api("PATCH", "/api/agents/pr/schedule/job-456/resume")
    assert [f["data"]["status"] for f in frames(cid)[1:]] == ["paused", "resumed"]
    assert [f["event"] for f in frames(cid)[1:]] == ["agent:paused", "agent:resumed"]


def test_scheduler_status_is_sent_and_throttled(ws: Ws, monkeypatch: pytest.MonkeyPatch) -> None:
    h = ws.h
    # The window is Redis's own (PX), in real time: widened so that a slow machine's ten API calls
    # still fall inside one; the test opens each window itself by deleting the lock.
    monkeypatch.setattr(live, "STATUS_WINDOW_MS", 60_000)
    cid = ws.client()
    ack = ws.send(cid, {"action": "subscribe-scheduler-updates"})
    assert ack == {"event": "subscribed", "data": {"topic": "scheduler-updates"}}
    [status] = frames(cid)[1:]
    assert status["event"] == "scheduler:status" and set(status["data"]) == {"stats", "timestamp"}
    assert status["data"]["stats"]["maxConcurrentAgents"] == 5
    h.redis.delete(h.svc.message_store.keys.ws_status_lock)
    for i in range(5):  # a burst of changes
        h.api("POST", "/api/agents", {"id": f"s{i}", "name": "A", "endpointUrl": "http://127.0.0.1:9/"})
        h.api("POST", f"/api/agents/s{i}/schedule", {"cronExpression": "* * * * *"})
    sent = [f for f in frames(cid) if f["event"] == "scheduler:status"]
    assert len(sent) == 2  # on subscribing, then the first change; the rest wait for the trailing send
    assert sent[1]["data"]["stats"]["scheduledTasksCount"] == 1
    trailing = [m["Body"] for m in h.receive() if json.loads(m["Body"]).get("kind") == "status"]
    assert len(trailing) == 1
    # The trailing send comes when the window has passed, and opens a window of its own: a change
    # just after it waits for the next trailing send rather than going out at once (8 sends a
    # second instead of 4).
    h.redis.delete(h.svc.message_store.keys.ws_status_lock)
    h.dispatch(trailing)
    assert h.redis.pttl(h.svc.message_store.keys.ws_status_lock) > 0
    last = [f for f in frames(cid) if f["event"] == "scheduler:status"][-1]
    assert last["data"]["stats"]["scheduledTasksCount"] == 5


def test_a_gone_connection_is_removed_on_the_first_failed_send(ws: Ws) -> None:
    h = ws.h
    h.api("POST", "/api/agents", {"id": "g", "name": "A", "endpointUrl": "http://127.0.0.1:9/"})
    h.api("POST", "/api/agents/g/schedule", {"cronExpression": "* * * * *"})
    gone, alive = ws.client(), ws.client()
    for cid in (gone, alive):
        ws.send(cid, {"action": "subscribe-agent-updates", "agentId": "g"})
    api = h.svc.events._publisher._api  # type: ignore[attr-defined]
    client = api.client(ENDPOINT)
    with Stubber(client) as stub:
        stub.add_client_error(
            "post_to_connection",
            service_error_code="GoneException",
            http_status_code=410,
            expected_params={"ConnectionId": gone, "Data": _any()},
        )
        stub.add_response("post_to_connection", {}, expected_params={"ConnectionId": alive, "Data": _any()})
        h.svc.events._publisher.send_to([(gone, "json"), (alive, "json")], {"event": "x", "data": {}})  # type: ignore[attr-defined]
    topic = h.svc.message_store.keys.ws_topic("agent:g")
    assert h.redis.smembers(topic) == {alive}
    assert not h.redis.exists(h.svc.message_store.keys.ws_connection(gone))


def started_frames(cids: list[str]) -> list[int]:
    return [sum(1 for f in frames(cid) if f["event"] == "agent:started") for cid in cids]


def five_subscribers_in_chunks_of_two(ws: Ws, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], Any]:
    """Five subscribers to agent `f`, and the publisher, with fan-outs shared out two at a time."""
    monkeypatch.setattr(live, "FANOUT_CHUNK", 2)
    ws.h.api("POST", "/api/agents", {"id": "f", "name": "A", "endpointUrl": "http://127.0.0.1:9/"})
    cids = [ws.client() for _ in range(5)]
    for cid in cids:
        ws.send(cid, {"action": "subscribe-agent-updates", "agentId": "f"})
    return cids, ws.h.svc.events._publisher  # type: ignore[attr-defined]


def test_a_large_fan_out_is_shared_out_through_the_queue_and_waited_for(
    ws: Ws, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = ws.h
    cids, publisher = five_subscribers_in_chunks_of_two(ws, monkeypatch)
    publisher_done = threading.Event()

    def publish() -> None:
        publisher.publish("agent:started", "f", {"agentId": "f"})
        publisher_done.set()

    thread = threading.Thread(target=publish)
    thread.start()
    shared: list[str] = []
    for _ in range(1000):  # until the publisher has handed out its two other chunks
        shared += [m["Body"] for m in h.receive(h.fanout_url)]
        if len(shared) == 2:
            break
        time.sleep(0.01)
    assert [json.loads(body)["kind"] for body in shared] == ["fanout", "fanout"]
    assert h.receive() == []  # the chunks go to the fan-out queue, not the dispatch queue
    assert not publisher_done.is_set()  # it waits until other invocations sent them
    for body in shared:  # one chunk per invocation, as the fan-out queue's event source hands them
        h.dispatch([body], handler="fanout")
    thread.join(10)
    assert publisher_done.is_set()
    assert started_frames(cids) == [1] * 5
    assert h.redis.keys(h.svc.message_store.keys.ws_fanout("*")) == []


def test_a_fan_out_the_queue_does_not_take_is_sent_by_the_publisher(
    ws: Ws, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = ws.h
    cids, publisher = five_subscribers_in_chunks_of_two(ws, monkeypatch)
    monkeypatch.setattr(publisher._fanout_queue, "send_now", lambda bodies: list(range(len(bodies))))
    publisher.publish("agent:started", "f", {"agentId": "f"})
    assert started_frames(cids) == [1] * 5
    assert h.receive(h.fanout_url) == []


def test_disconnect_and_expiry_clean_up(ws: Ws) -> None:
    h = ws.h
    h.api("POST", "/api/agents", {"id": "d", "name": "A", "endpointUrl": "http://127.0.0.1:9/"})
    cid = ws.client()
    ws.send(cid, {"action": "subscribe-agent-updates", "agentId": "d"})
    ws.send(cid, {"action": "subscribe-scheduler-updates"})
    keys = h.svc.message_store.keys
    assert 0 < h.redis.ttl(keys.ws_connection(cid)) <= 600
    assert 0 < h.redis.ttl(keys.ws_topic("agent:d")) <= 7200
    ws.invoke("ws_disconnect", ws_event("$disconnect", cid))
    assert not h.redis.exists(keys.ws_connection(cid), keys.ws_subscriptions(cid))
    assert h.redis.smembers(keys.ws_topic("agent:d")) == set()
    assert h.redis.smembers(keys.ws_topic("scheduler")) == set()
    # A subscriber whose records expired (it vanished without a close) is dropped when next sent to.
    ghost = ws.client()
    ws.send(ghost, {"action": "subscribe-agent-updates", "agentId": "d"})
    h.redis.delete(keys.ws_connection(ghost))
    assert h.svc.ws_routes._live.subscribers("agent:d") == []  # type: ignore[attr-defined]
    assert h.redis.smembers(keys.ws_topic("agent:d")) == set()


class _any:  # noqa: N801 (a matcher for Stubber)
    def __eq__(self, other: object) -> bool:
        return True


def status_frames(connection_id: str) -> list[dict[str, Any]]:
    return [f["data"]["stats"] for f in frames(connection_id) if f["event"] == "scheduler:status"]


def test_scheduler_status_follows_a_runs_counts(ws: Ws) -> None:
    agent = Receiver(responder=lambda path, n: (202, {}))
    try:
        h = ws.h
        h.api("POST", "/api/agents", {"id": "counted", "name": "A", "endpointUrl": agent.url})
        cid = ws.client()
        ws.send(cid, {"action": "subscribe-scheduler-updates"})
        h.api("POST", "/api/agents/counted/run")
        h.drain(hold_timeouts=True)  # starts the run, and feeds any trailing status send
        request = agent.wait_for(1)[0].json()
        going = status_frames(cid)[-1]
        assert going["runningAgentsCount"] == 1 and going["queuedTasksCount"] == 0
        base = f"/api/agents/counted/runs/{request['runId']}"
        assert h.api("POST", f"{base}/complete", {}, token=request["callbackToken"])[0] == 200
        h.drain(hold_timeouts=True)
        done = status_frames(cid)[-1]
        assert done["runningAgentsCount"] == 0 and done["queuedTasksCount"] == 0
        assert len(status_frames(cid)) <= 6  # throttled: not one per change of every kind
    finally:
        agent.stop()


def test_management_clients_are_made_once_under_concurrent_first_use(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    both_inside = threading.Barrier(2, timeout=0.5)
    real_client = boto3.session.Session.client

    def client(self: boto3.session.Session, *args: Any, **kwargs: Any) -> Any:
        made.append(kwargs["endpoint_url"])
        # Two first uses racing both get here unless creation is serialised;
        # serialised, the barrier times out and the one creator goes on.
        with contextlib.suppress(threading.BrokenBarrierError):
            both_inside.wait()
        return real_client(self, *args, **kwargs)

    monkeypatch.setattr(boto3.session.Session, "client", client)
    api = ManagementApi(harness.svc.settings)
    with ThreadPoolExecutor(max_workers=2) as pool:
        got = list(pool.map(lambda _: api.client(ENDPOINT), range(2)))
    assert made == [ENDPOINT]
    assert got[0] is got[1]
