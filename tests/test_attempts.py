"""Each delivery's attempts, the failed messages' listing and their replay, with a real Redis."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from chalicelib.attempt_log import ATTEMPT_LOG_SIZE
from chalicelib.timeutil import format_instant
from tests.conftest import T0, Harness, message
from tests.receiver import Receiver, answering

SOON = "2030-01-01T00:00:30Z"
SOON_MS = T0 + 30_000
LATER = "2030-01-01T01:00:00Z"
FAR = T0 + 3_600_000


def replay(harness: Harness, message_id: str, body: Any = None) -> tuple[int, Any]:
    return harness.api("POST", f"/messages/{message_id}/replay", body)


@pytest.fixture
def answers() -> Any:
    """An endpoint that answers with the status set in `answers['status']` (200 at first)."""
    endpoint, answers = answering(200)
    yield endpoint, answers
    endpoint.stop()


# -- attempts -------------------------------------------------------------------------------


def test_a_delivered_message_shows_its_one_attempt(harness: Harness, receiver: Receiver) -> None:
    harness.post(message("ok", SOON, receiver.url))
    assert harness.read_message("ok")["attemptLog"] == []
    harness.drain()
    record = harness.read_message("ok")
    assert record["attempts"] == 1  # the integer stays what it was
    assert record["attemptLog"] == [{
        "attempt": 1, "startedAt": format_instant(SOON_MS), "status": 200, "error": None, "latencyMs": 0,
        "nextRetryAt": None, "kind": "delivery"}]


def test_each_retry_is_an_attempt_with_its_status_error_and_next_retry(harness: Harness) -> None:
    flaky = Receiver(responder=lambda path, n: (500, {}) if n <= 2 else (200, {}))
    try:
        harness.post(message("flaky", SOON, flaky.url))
        harness.drain()
        log = harness.read_message("flaky")["attemptLog"]
    finally:
        flaky.stop()
    started = [SOON_MS, SOON_MS + 1_000, SOON_MS + 3_000]  # backoff of 1 s, then 2 s
    assert log == [
        {"attempt": 1, "startedAt": format_instant(started[0]), "status": 500, "error": "HTTP 500",
         "latencyMs": 0, "nextRetryAt": format_instant(started[1]), "kind": "delivery"},
        {"attempt": 2, "startedAt": format_instant(started[1]), "status": 500, "error": "HTTP 500",
         "latencyMs": 0, "nextRetryAt": format_instant(started[2]), "kind": "delivery"},
        {"attempt": 3, "startedAt": format_instant(started[2]), "status": 200, "error": None,
         "latencyMs": 0, "nextRetryAt": None, "kind": "delivery"},
    ]


def test_an_attempt_spent_while_the_breaker_is_open_is_logged_as_such(harness: Harness, answers: Any) -> None:
    endpoint, answers = answers
    answers["status"] = 503
    harness.configure(breaker_failures=1, webhook_max_retries=1)
    opens_it, held = harness.ids_in_one_shard("breaker", 2)  # each shard keeps its own breaker
    harness.post(message(opens_it, SOON, endpoint.url))
    harness.dispatch([m["Body"] for m in harness.receive()])  # one failed call opens the breaker
    harness.post(message(held, "2030-01-01T00:00:31Z", endpoint.url))
    harness.drain()
    assert len(endpoint.received) == 1
    log = harness.read_message(held)["attemptLog"]
    assert [(a["attempt"], a["kind"], a["status"], a["latencyMs"]) for a in log] == [
        (1, "breaker-open", None, None), (2, "breaker-open", None, None)]
    assert "circuit breaker" in log[0]["error"] and log[0]["nextRetryAt"] is not None
    assert log[1]["nextRetryAt"] is None  # its retries are spent: failed


def test_the_log_keeps_the_last_attempts_only(harness: Harness, answers: Any) -> None:
    endpoint, answers = answers
    answers["status"] = 404  # fails at once
    harness.post(message("again", SOON, endpoint.url))
    harness.drain()
    for _ in range(12):  # each round logs the replay and its attempt
        assert replay(harness, "again")[0] == 200
        harness.drain()
    log = harness.read_message("again")["attemptLog"]
    assert len(endpoint.received) == 13
    assert len(log) == ATTEMPT_LOG_SIZE == 20
    assert [a["kind"] for a in log] == ["replay", "delivery"] * 10  # the oldest went first
    assert harness.redis.ttl(harness.message_key("again")) > 0  # kept as the message


def test_an_agent_run_shows_its_attempts(harness: Harness) -> None:
    agent = Receiver(responder=lambda path, n: (502, {}) if n == 1 else (200, {}))
    try:
        harness.api("POST", "/api/agents", {"id": "a1", "name": "a1", "endpointUrl": agent.url + "/run"})
        status, body = harness.api("POST", "/api/agents/a1/run")
        run_id = body["data"]["runId"]
        harness.drain()
        status, body = harness.api("GET", f"/api/agents/a1/runs/{run_id}")
    finally:
        agent.stop()
    assert status == 200 and body["data"]["status"] == "completed"
    log = body["data"]["attemptLog"]
    assert [(a["attempt"], a["kind"], a["status"], a["error"]) for a in log] == [
        (1, "delivery", 502, "HTTP 502"), (2, "delivery", 200, None)]
    assert log[0]["nextRetryAt"] == log[1]["startedAt"] and log[1]["nextRetryAt"] is None


# -- replay -----------------------------------------------------------------------------------


def test_a_failed_message_is_replayed_now_under_the_same_id(harness: Harness, answers: Any) -> None:
    endpoint, answers = answers
    answers["status"] = 410
    harness.post(message("dead", SOON, endpoint.url, {"n": 1}))
    harness.drain()
    assert harness.read_message("dead")["status"] == "failed"
    answers["status"] = 200
    harness.clock.set(SOON_MS + 60_000)
    status, body = replay(harness, "dead")
    assert (status, body) == (200, {"status": "scheduled", "messageId": "dead",
                                    "scheduleTo": format_instant(SOON_MS + 60_000)})
    record = harness.read_message("dead")
    assert record["status"] == "queued" and record["attempts"] == 0 and record["lastError"] is None
    assert record["failedAt"] is None and record["payload"] == {"n": 1}
    assert harness.redis.ttl(harness.message_key("dead")) == -1  # kept until done
    assert [a["kind"] for a in record["attemptLog"]] == ["delivery", "replay"]
    assert record["attemptLog"][1] == {
        "attempt": 0, "startedAt": format_instant(SOON_MS + 60_000), "status": None, "error": None,
        "latencyMs": None, "nextRetryAt": format_instant(SOON_MS + 60_000), "kind": "replay"}
    assert json.loads(harness.get("/messages?status=failed").body)["failedMessages"] == []
    harness.drain()
    first, second = endpoint.received
    assert second.headers["webhook-id"] == first.headers["webhook-id"] == "dead"
    assert second.json() == {"n": 1}
    record = harness.read_message("dead")
    assert record["status"] == "delivered" and record["attempts"] == 1
    assert [a["status"] for a in record["attemptLog"]] == [410, None, 200]


def test_a_delivered_message_is_replayed_on_time_at_its_schedule_to(
    harness: Harness, receiver: Receiver
) -> None:
    harness.post(message("twice", SOON, receiver.url))
    harness.drain()
    # Inside the window the last tick covered: it goes the way a new message would, with the
    # deployed lead (2 s): it waits for the sweep of its second, which its replay asked for.
    harness.configure(lead_seconds=2)
    status, body = replay(harness, "twice", {"scheduleTo": "2030-01-01T00:01:15+00:00"})
    assert (status, body["scheduleTo"]) == (200, "2030-01-01T00:01:15.000Z")
    assert harness.read_message("twice")["status"] == "scheduled"
    held = harness.sqs.get_queue_attributes(QueueUrl=harness.queue_url,
                                            AttributeNames=["ApproximateNumberOfMessagesDelayed"])
    assert held["Attributes"]["ApproximateNumberOfMessagesDelayed"] == "1"  # the sweep, held back
    harness.clock.set(T0 + 73_000)
    harness.dispatch([harness.sweep_body(T0 + 75_000, "twice")])
    harness.drain()
    assert len(receiver.wait_for(2)) == 2
    assert harness.clock.now_ms() == T0 + 75_000
    assert harness.read_message("twice")["status"] == "delivered"
    # Beyond it: the tick claims it (and hands it to SQS visible at once, as tests have it).
    harness.configure(lead_seconds=900)
    assert replay(harness, "twice", {"scheduleTo": LATER})[0] == 200
    assert harness.drain() == 0
    harness.clock.set(FAR - 60_000)
    assert harness.tick()["claimed"] == 1
    harness.drain()
    assert len(receiver.wait_for(3)) == 3 and harness.clock.now_ms() == FAR


def test_replay_refuses_a_pending_or_unknown_message_and_bad_input(harness: Harness) -> None:
    harness.post(message("waiting", LATER, "http://127.0.0.1:9/x"))
    before = harness.read_message("waiting")
    status, body = replay(harness, "waiting")
    assert status == 409 and "pending" in body["detail"]
    assert harness.read_message("waiting") == before
    status, body = replay(harness, "nobody")
    assert status == 404 and "nobody" in body["detail"]
    for bad, says in ((b"{", "not valid JSON"), ({"scheduleTo": "tomorrow"}, "scheduleTo"),
                      ({"scheduleTo": "2030-01-01T10:00:00"}, "offset"), ({"when": LATER}, "unknown field"),
                      ([LATER], "JSON object")):
        status, body = replay(harness, "waiting", bad)
        assert status == 400 and says in body["detail"], (bad, body)
    assert harness.read_message("waiting") == before


# -- the failed listing -------------------------------------------------------------------------


def fail_concurrently(harness: Harness, ids: list[str], url: str, second: int = 30) -> None:
    """Post messages due in one second, then deliver them from concurrent invocations: their
    failures are recorded at once, at the same instant."""
    for message_id in ids:
        harness.post(message(message_id, f"2030-01-01T00:00:{second}Z", url))
    bodies = [m["Body"] for m in harness.receive()]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda body: harness.svc.dispatcher.handle_bodies([body], lambda: FAR), bodies))


def failed_page(harness: Harness, query: str) -> dict[str, Any]:
    status, body = harness.api("GET", f"/messages?status=failed&{query}")
    assert status == 200, body
    return dict(body)


def test_failed_messages_are_listed_newest_first_with_a_stable_cursor(harness: Harness, answers: Any) -> None:
    endpoint, answers = answers
    answers["status"] = 400
    ids = [f"f{i:02}" for i in range(24)]
    for second, group in zip((30, 40, 50), (ids[::3], ids[1::3], ids[2::3]), strict=True):
        fail_concurrently(harness, group, endpoint.url, second)
    everything = failed_page(harness, "limit=100")
    assert everything["count"] == 24 and everything["nextCursor"] is None
    rows = everything["failedMessages"]
    for row in rows:
        record = harness.read_message(row["messageId"])
        assert row == {"messageId": record["messageId"], "webhookUrl": endpoint.url,
                       "failedAt": record["failedAt"],
                       "lastError": "HTTP 400", "attempts": 1}
    # The latest failures first; those of one instant in id order.
    assert [r["messageId"] for r in rows] == ids[2::3] + ids[1::3] + ids[::3]
    assert [r["failedAt"][17:19] for r in rows] == ["50"] * 8 + ["40"] * 8 + ["30"] * 8

    # Paging while more fail: the pages hold exactly the messages that had failed when paging began.
    first = failed_page(harness, "limit=7")
    fail_concurrently(harness, [f"g{i:02}" for i in range(6)], endpoint.url, 55)
    paged, cursor = list(first["failedMessages"]), first["nextCursor"]
    while cursor:
        page = failed_page(harness, f"limit=7&cursor={cursor}")
        paged += page["failedMessages"]
        cursor = page["nextCursor"]
    assert [r["messageId"] for r in paged] == [r["messageId"] for r in rows]
    newest = failed_page(harness, "limit=6")
    assert {r["messageId"] for r in newest["failedMessages"]} == {f"g{i:02}" for i in range(6)}
    assert newest["count"] == 30


def test_the_failed_listing_forgets_deleted_and_expired_messages(harness: Harness, answers: Any) -> None:
    endpoint, answers = answers
    answers["status"] = 400
    fail_concurrently(harness, ["x1", "x2"], endpoint.url)
    assert harness.delete("/messages/x1").status_code == 200
    assert [r["messageId"] for r in failed_page(harness, "")["failedMessages"]] == ["x2"]
    # A new message under a failed one's id takes it out of the listing too.
    harness.post(message("x2", LATER, endpoint.url))
    assert failed_page(harness, "")["count"] == 0
    fail_concurrently(harness, ["x3"], endpoint.url)
    harness.clock.advance(harness.svc.settings.retention_seconds * 1000 + 1)
    assert failed_page(harness, "") == {"failedMessages": [], "count": 0, "nextCursor": None}
    shards = harness.svc.message_store.shards.listed()
    assert sum(harness.redis.zcard(keys.failed_messages) for keys in shards) == 0


def test_an_unknown_status_is_refused_and_pending_is_the_default(harness: Harness) -> None:
    harness.post(message("p", LATER, "http://127.0.0.1:9/x"))
    status, body = harness.api("GET", "/messages?status=delivered")
    assert status == 400 and "status must be pending" in body["detail"]
    assert harness.api("GET", "/messages?status=pending") == harness.api("GET", "/messages")
    assert harness.api("GET", "/messages")[1]["count"] == 1


def test_a_replay_is_signed_with_the_messages_own_secret(harness: Harness, answers: Any) -> None:
    from datetime import UTC, datetime

    from standardwebhooks.webhooks import Webhook

    own = "whsec_bWluZS1vd24tc2VjcmV0LW9mLTMyLWJ5dGVzLW9rISE="
    endpoint, answers = answers
    answers["status"] = 404
    harness.post({**message("signed", SOON, endpoint.url), "webhookSecret": own})
    harness.drain()
    answers["status"] = 200
    assert replay(harness, "signed")[0] == 200
    harness.drain()
    _, again = endpoint.received
    sent_at = datetime.fromtimestamp(int(again.headers["webhook-timestamp"]), tz=UTC)
    assert again.headers["webhook-signature"] == Webhook(own).sign("signed", sent_at, again.body.decode())
    assert "whsec_" not in harness.get("/messages/signed").body.decode()
