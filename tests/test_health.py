"""/health: the spec's body for anyone, cached briefly per container; the detail behind the token
(issue 21, finding 3); and no 503 that names the Redis server (finding 9)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from chalicelib.config import DEFAULT_DISPATCH_QUEUE
from chalicelib.health import PUBLIC_TTL_MS
from emulator.ports import free_port
from tests.conftest import TOKEN, Harness, message

LATER = "2030-01-01T01:00:00Z"


def get(harness: Harness, token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    response = harness.client.http.get("/health", headers=headers)
    return response.status_code, json.loads(response.body)


def test_without_the_token_the_body_is_the_specs(harness: Harness) -> None:
    assert get(harness) == (200, {"status": "healthy", "redis": "connected"})
    # A wrong token is no 401 on a public route: the public answer.
    assert get(harness, "not-the-token") == (200, {"status": "healthy", "redis": "connected"})
    assert get(harness, TOKEN)[1] == {"status": "healthy", "redis": "connected", "queue": "reachable",
                                      "oldestOverdueMs": 0, "evictionPolicy": "noeviction"}


def test_the_public_answer_is_cached_briefly_and_the_detail_is_not(harness: Harness) -> None:
    assert get(harness)[0] == 200
    harness.sqs.delete_queue(QueueUrl=harness.queue_url)
    try:
        # A flood of public checks within the period costs no Redis or SQS call.
        assert get(harness) == (200, {"status": "healthy", "redis": "connected"})
        status, detail = get(harness, TOKEN)
        assert (status, detail["queue"]) == (503, "unreachable")
        harness.clock.advance(PUBLIC_TTL_MS - 1)
        assert get(harness)[0] == 200
        harness.clock.advance(1)
        assert get(harness) == (503, {"status": "unhealthy", "redis": "connected"})
    finally:
        harness.sqs.create_queue(QueueName=DEFAULT_DISPATCH_QUEUE)  # the fixture deletes it


def _redis_down(harness: Harness) -> int:
    port = free_port()  # nothing listens there
    harness.redis = redis.Redis(host="127.0.0.1", port=port, decode_responses=True,
                                retry=Retry(NoBackoff(), 0))
    harness.configure()
    return port


def test_a_503_names_no_redis_server_and_the_log_does(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.api("POST", "/api/agents", {"id": "a1", "name": "A", "endpointUrl": "http://127.0.0.1:9/run"})
    port = _redis_down(harness)
    with caplog.at_level(logging.WARNING, logger="chalicelib"):
        answers = [
            harness.post(message("m", LATER, "http://127.0.0.1:9/hook")),
            harness.get("/messages/m"),
            # The run report route needs no API token: anyone can reach it.
            harness.client.http.post(
                "/api/agents/a1/runs/r1/progress", body=json.dumps({"progress": 5}),
                headers={"Authorization": "Bearer any", "Content-Type": "application/json"}),
            harness.client.http.get("/health"),
        ]
    for response in answers:
        assert response.status_code == 503, response.body
        text = response.body.decode()
        assert str(port) not in text and "127.0.0.1" not in text and "Error" not in text, text
    assert json.loads(answers[0].body) == {"detail": "storage is unavailable"}
    assert json.loads(answers[2].body) == {"success": False, "error": "storage is unavailable"}
    assert any(str(port) in record.getMessage() for record in caplog.records)
