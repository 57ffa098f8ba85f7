"""Limits on the live events: agent:progress coalesced per run, WebSocket caps, connect tickets
and connections whose token was rotated away. Handlers as API Gateway invokes them, moto's
management API, real Redis, the fake clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib import services
from chalicelib.live import PROGRESS_WINDOW_MS
from chalicelib.services import Services
from tests.conftest import Harness
from tests.receiver import Receiver
from tests.test_live import ENDPOINT, Ws, frames


@pytest.fixture
def ws(harness: Harness) -> Ws:
    """Services with the WebSocket publisher (not the recorder), sending through moto."""
    harness.configure(ws_management_endpoint=ENDPOINT)
    harness.svc = Services.build(harness.svc.settings, clock=harness.clock, redis_client=harness.redis,
                                 sqs_client=harness.sqs)
    services.install(harness.svc)
    return Ws(harness)


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
