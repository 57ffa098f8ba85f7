"""The /messages and /health routes through Chalice's test client, with real Redis and moto."""

from __future__ import annotations

import base64
import json

import pytest

from tests.conftest import AUTH, T0, Harness, message

URL = "http://127.0.0.1:9/hook"
LATER = "2030-01-01T01:00:00Z"  # an hour after the fake clock's now


def body_of(response) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(response.body)


def test_create_answers_as_the_spec_says(harness: Harness) -> None:
    response = harness.post(message("order-1", LATER, URL))
    assert response.status_code == 200
    assert body_of(response) == {"status": "scheduled", "messageId": "order-1"}
    shown = body_of(harness.get("/messages/order-1"))
    assert shown["status"] == "scheduled"
    assert shown["scheduleTo"] == "2030-01-01T01:00:00.000Z"
    assert shown["payload"] == {"hello": "order-1"}
    assert shown["attempts"] == 0 and shown["lastError"] is None


def test_duplicate_id_is_409_and_keeps_the_first(harness: Harness) -> None:
    harness.post(message("dup", LATER, URL, {"v": 1}))
    response = harness.post(message("dup", "2030-01-02T00:00:00Z", URL, {"v": 2}))
    assert response.status_code == 409
    assert "already exists" in body_of(response)["detail"]
    assert body_of(harness.get("/messages/dup"))["payload"] == {"v": 1}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"},
                                     {"Authorization": "Bearer "}])
@pytest.mark.parametrize("method, path", [("POST", "/messages"), ("GET", "/messages"),
                                          ("GET", "/messages/x"), ("DELETE", "/messages/x")])
def test_token_required(harness: Harness, headers: dict, method: str, path: str) -> None:
    response = harness.client.http.request(method, path, headers=headers,
                                           body=json.dumps(message("x", LATER, URL)))
    assert response.status_code == 401
    assert "token" in body_of(response)["detail"]
    assert harness.redis.dbsize() == 0


@pytest.mark.parametrize(
    "raw, status, fragment",
    [
        ("{bad json", 400, "not valid JSON"),
        ("[]", 400, "JSON object"),
        ("", 400, "empty"),
        (json.dumps({"id": "a"}), 400, "missing required field(s): scheduleTo, payload, webhookUrl"),
        (json.dumps(message("", LATER, URL)), 400, "id must not be empty"),
        (json.dumps(message("a/b", LATER, URL)), 400, "'/'"),
        (json.dumps(message("x" * 257, LATER, URL)), 400, "256"),
        (json.dumps(message("ok", "2030-01-01 10:00", URL)), 400, "no UTC offset"),
        (json.dumps(message("ok", "next tuesday", URL)), 400, "scheduleTo is not an ISO 8601"),
        (json.dumps(message("ok", LATER, URL, payload="str")), 400, "payload must be a JSON object"),
        (json.dumps(message("ok", LATER, "ftp://x/y")), 400, "webhookUrl must use http or https"),
        (json.dumps(message("ok", LATER, "http://")), 400, "webhookUrl has no host"),
        (json.dumps(message("ok", LATER, URL, payload={"x": "y" * 300_000})), 413, "limit is 262144"),
    ],
)
def test_bad_input_is_refused_and_leaves_nothing(harness: Harness, raw: str, status: int,
                                                 fragment: str) -> None:
    response = harness.post(raw)
    assert response.status_code == status
    assert fragment in body_of(response)["detail"]
    assert harness.redis.dbsize() == 0
    assert harness.receive() == []
    # The id stays free.
    assert harness.post(message("ok", LATER, URL)).status_code == 200


def test_private_targets_refused_outside_local_mode(harness: Harness) -> None:
    harness.configure(local_mode=False)
    response = harness.post(message("ssrf", LATER, "http://169.254.169.254/latest/meta-data"))
    assert response.status_code == 400
    assert "internal address" in body_of(response)["detail"]
    assert harness.redis.dbsize() == 0


def test_any_content_type_is_read_as_json(harness: Harness) -> None:
    response = harness.post(message("ct", LATER, URL), headers={**AUTH, "Content-Type": "text/plain"})
    assert response.status_code == 200


def test_listing_is_paginated_in_due_order_with_a_total(harness: Harness) -> None:
    # Five share one instant, so the cursor must order within a score too.
    for i in range(5):
        harness.post(message(f"same-{i}", "2030-01-01T02:00:00Z", URL))
    for i, minute in enumerate([30, 10, 50]):
        harness.post(message(f"m{i}", f"2030-01-01T01:{minute}:00Z", URL))
    seen = []
    cursor = None
    pages = 0
    while True:
        path = "/messages?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = body_of(harness.get(path))
        assert page["count"] == (8 if pages == 0 else 7)
        seen += [job["messageId"] for job in page["scheduledJobs"]]
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
        # A message that leaves between pages does not shift the next page.
        if pages == 1:
            harness.delete(f"/messages/{seen[-1]}")
    assert seen == ["m1", "m0", "m2", "same-0", "same-1", "same-2", "same-3", "same-4"]
    first = body_of(harness.get("/messages?limit=1"))["scheduledJobs"][0]
    assert first == {"messageId": "m1", "nextRun": "2030-01-01T01:10:00.000Z", "job": "deliver_webhook"}


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize("query, fragment", [
    ("limit=0", "from 1 to 1000"), ("limit=1001", "from 1 to 1000"), ("limit=ten", "whole number"),
    ("cursor=garbage!", "cursor"),
    # A lone surrogate, which Redis's client cannot encode; and nesting past Python's recursion limit.
    ("cursor=" + _cursor('[1, "\\ud800"]'), "cursor"),
    ("cursor=" + _cursor("[" * 3000 + "]" * 3000), "cursor"),
])
def test_listing_refuses_bad_parameters(harness: Harness, query: str, fragment: str) -> None:
    response = harness.get(f"/messages?{query}")
    assert response.status_code == 400
    assert fragment in body_of(response)["detail"]


def test_delete_cancels_and_frees_the_id(harness: Harness) -> None:
    harness.post(message("gone", LATER, URL))
    response = harness.delete("/messages/gone")
    assert response.status_code == 200
    assert body_of(response) == {"status": "deleted", "messageId": "gone"}
    assert harness.get("/messages/gone").status_code == 404
    assert body_of(harness.get("/messages"))["count"] == 0
    assert harness.delete("/messages/gone").status_code == 404
    assert "not found" in body_of(harness.delete("/messages/gone"))["detail"]
    assert harness.post(message("gone", LATER, URL)).status_code == 200


def test_an_id_is_found_whether_or_not_the_client_percent_encodes_it(harness: Harness) -> None:
    """JavaScript's encodeURIComponent encodes ':' and '@'; curl sends them as they are."""
    assert harness.post(message("order:42@shop", LATER, URL)).status_code == 200
    assert body_of(harness.get("/messages/order:42@shop"))["messageId"] == "order:42@shop"
    assert body_of(harness.get("/messages/order%3A42%40shop"))["messageId"] == "order:42@shop"
    response = harness.delete("/messages/order%3A42%40shop")
    assert body_of(response) == {"status": "deleted", "messageId": "order:42@shop"}
    assert harness.get("/messages/order:42@shop").status_code == 404


def test_health(harness: Harness) -> None:
    # The spec's body for anyone; the detail for the API token's holder (tests/test_health.py).
    response = harness.client.http.get("/health")
    assert response.status_code == 200
    assert body_of(response) == {"status": "healthy", "redis": "connected"}
    response = harness.get("/health")
    assert response.status_code == 200
    assert body_of(response) == {"status": "healthy", "redis": "connected", "queue": "reachable",
                                 "oldestOverdueMs": 0, "evictionPolicy": "noeviction"}


def test_health_and_writes_when_redis_is_down(harness: Harness) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    dead = redis.Redis(host="127.0.0.1", port=1, decode_responses=True, retry=Retry(NoBackoff(), 0))
    harness.redis = dead
    harness.configure()
    response = harness.client.http.get("/health")
    assert response.status_code == 503
    assert body_of(response) == {"status": "unhealthy", "redis": "disconnected"}
    response = harness.get("/health")
    assert response.status_code == 503
    assert body_of(response) == {"status": "unhealthy", "redis": "disconnected", "queue": "reachable",
                                 "oldestOverdueMs": None, "evictionPolicy": None,
                                 "reason": "Redis does not answer"}
    response = harness.post(message("x", LATER, URL))
    assert response.status_code == 503
    assert body_of(response) == {"detail": "storage is unavailable"}


def test_now_is_the_fake_clock(harness: Harness) -> None:
    harness.post(message("created", LATER, URL))
    created = body_of(harness.get("/messages/created"))["createdAt"]
    assert created == "2030-01-01T00:00:00.000Z" and T0 == 1_893_456_000_000


def test_years_before_1000_are_shown_in_iso_8601(harness: Harness) -> None:
    # Found by schemathesis: such a time came back as "958-09-06T23:21:34.000Z", not a date-time.
    assert harness.post(message("early", "0958-09-06T23:21:34Z", URL)).status_code == 200
    assert body_of(harness.get("/messages/early"))["scheduleTo"] == "0958-09-06T23:21:34.000Z"
    [job] = body_of(harness.get("/messages"))["scheduledJobs"]
    assert job["nextRun"] == "0958-09-06T23:21:34.000Z"


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_instants_outside_years_1_to_9999_in_utc_are_refused(harness: Harness, when: str) -> None:
    # Valid local times whose UTC instant no datetime can show: stored, every read was a 500.
    response = harness.post(message("edge", when, URL))
    assert response.status_code == 400
    assert "scheduleTo is out of range" in body_of(response)["detail"]
    assert harness.redis.dbsize() == 0


def test_a_cursor_with_a_boolean_score_is_refused(harness: Harness) -> None:
    # [true, "m"] decodes to an int score for Python, which redis-py then refused: a 500.
    cursor = base64.urlsafe_b64encode(b'[true,"m"]').decode().rstrip("=")
    response = harness.get(f"/messages?cursor={cursor}")
    assert response.status_code == 400
    assert "cursor is not valid" in body_of(response)["detail"]
