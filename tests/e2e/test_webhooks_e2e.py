"""Webhooks through the real local stack: REST API, ticker, SQS (moto server), pollers, Redis."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from emulator.launcher import SECRET, TOKEN, Stack, alive, descendants
from tests.receiver import Receiver

# On time, for a test on a busy 2-core CI machine; bench/webhooks.py measures the real figures.
ON_TIME = 1.5


def at(seconds_from_now: float) -> tuple[str, float]:
    due = datetime.now(UTC) + timedelta(seconds=seconds_from_now)
    return due.isoformat(timespec="milliseconds").replace("+00:00", "Z"), due.timestamp()


def schedule(stack: Stack, id: str, seconds: float, url: str) -> float:
    when, due = at(seconds)
    response = stack.call("POST", "/messages", {"id": id, "scheduleTo": when, "payload": {"n": id},
                                                "webhookUrl": url})
    assert response.status_code == 200, response.text
    return due


def test_delivered_once_on_time_and_signed(stack: Stack, receiver: Receiver) -> None:
    due = schedule(stack, "e2e-on-time", 3, receiver.url + "/on-time")
    [got] = receiver.wait_for(1, timeout=15)
    assert got.path == "/on-time"
    assert due - 0.005 <= got.at <= due + ON_TIME
    assert got.json() == {"n": "e2e-on-time"}
    assert got.headers["webhook-id"] == "e2e-on-time"
    sent_at = datetime.fromtimestamp(int(got.headers["webhook-timestamp"]), tz=UTC)
    assert got.headers["webhook-signature"] == Webhook(SECRET).sign("e2e-on-time", sent_at, got.body.decode())
    record = stack.wait_until("/messages/e2e-on-time", lambda m: m["status"] == "delivered")
    assert record["attempts"] == 1
    assert stack.call("GET", "/messages").json()["count"] == 0


def test_a_500_is_retried_then_delivered(stack: Stack) -> None:
    receiver = Receiver(responder=lambda path, n: (500, {}) if n == 1 else (200, {}))
    try:
        schedule(stack, "e2e-retry", 0, receiver.url + "/retry")
        first, second = receiver.wait_for(2, timeout=15)
        # Backoff: the retry comes about a second after the failure.
        assert 0.9 <= second.at - first.at <= 1 + ON_TIME
        record = stack.wait_until("/messages/e2e-retry", lambda m: m["status"] == "delivered")
        assert record["attempts"] == 2
    finally:
        receiver.stop()


def test_deleted_message_is_never_delivered_and_nothing_is_delivered_twice(
    stack: Stack, receiver: Receiver
) -> None:
    due = schedule(stack, "e2e-cancel", 3, receiver.url + "/cancel")
    kept = schedule(stack, "e2e-kept", 3, receiver.url + "/kept")
    assert stack.call("DELETE", "/messages/e2e-cancel").status_code == 200
    assert stack.call("GET", "/messages/e2e-cancel").status_code == 404
    receiver.wait_for(1, timeout=15)
    # Past both due instants and a few ticks later, still only the one kept delivery.
    time.sleep(max(0.0, max(due, kept) + 3 - time.time()))
    assert [r.path for r in receiver.received] == ["/kept"]


def test_accepted_messages_survive_a_restart_of_every_process(tmp_path: Path, receiver: Receiver) -> None:
    stack = Stack(tmp_path / "restart").start()
    try:
        # One due while the stack is down, one due after it is back; both already in SQS.
        during = schedule(stack, "during", 5, receiver.url + "/during")
        schedule(stack, "after", 14, receiver.url + "/after")
        children = descendants(stack.process.pid)  # type: ignore[union-attr]
        # redis, api, ws gateway, workers; and moto unless an outside endpoint (LocalStack) serves SQS.
        embedded_moto = 0 if stack.env.get("AWS_ENDPOINT_URL") else 1
        assert len(children) >= 4 + embedded_moto
        assert stack.stop() == 0
        # Ctrl-C leaves nothing running.
        assert [pid for pid in children if alive(pid)] == []
        assert receiver.received == []
        time.sleep(max(0.0, during + 1 - time.time()))  # "during" falls due while nothing runs
        stack.start()
        # An embedded moto lost its messages with the restart (a LocalStack kept them); either
        # way Redis kept them, and the tick re-sends what was queued but never claimed once
        # QUEUE_GRACE_SECONDS have passed. Claim tokens make sure each is delivered once.
        got = receiver.wait_for(2, timeout=40)
        assert sorted(r.path for r in got) == ["/after", "/during"]
        for id in ("during", "after"):
            assert stack.wait_until(f"/messages/{id}", lambda m: m["status"] == "delivered")["attempts"] == 1
    finally:
        if stack.process and stack.process.poll() is None:
            stack.stop()


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"id": "x"}'])
def test_bad_input_is_refused_with_a_4xx(stack: Stack, body: bytes) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    response = requests.post(stack.url + "/messages", data=body, headers=headers, timeout=5)
    assert 400 <= response.status_code < 500
    assert "detail" in response.json()
