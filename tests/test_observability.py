"""What an operator sees: /health's queue and overdue figures, JSON log lines, CloudWatch metrics."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib import observability
from chalicelib.config import DEFAULT_DISPATCH_QUEUE
from tests.conftest import T0, TOKEN, Harness, message
from tests.receiver import Receiver

SOON = "2030-01-01T00:00:30Z"
LATER = "2030-01-01T01:00:00Z"


class Lines(logging.Handler):
    """The JSON lines the service logger writes, formatted by its own formatter."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(observability.logger.registered_formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def of(self, kind: str) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in self.lines]
        return [x for x in parsed if x.get("kind") == kind]


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    observability.logger.addHandler(handler)
    yield handler
    observability.logger.removeHandler(handler)


def emf_blobs(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def metric_values(blobs: list[dict[str, Any]], name: str) -> list[float]:
    values: list[float] = []
    for blob in blobs:
        if name in blob:
            value = blob[name]
            values.extend(value if isinstance(value, list) else [value])
    return values


def health(harness: Harness) -> tuple[int, dict[str, Any]]:
    """/health's detail (the API token's holder's)."""
    response = harness.client.http.get("/health", headers={"Authorization": f"Bearer {TOKEN}"})
    return response.status_code, json.loads(response.body)


def test_health_reports_the_oldest_overdue_item(harness: Harness) -> None:
    harness.post(message("late", LATER, "http://127.0.0.1:9/hook"))
    assert health(harness)[1]["oldestOverdueMs"] == 0  # due in an hour
    harness.clock.set(T0 + 3600_000 + 5_000)  # no tick ran: five seconds overdue
    status, body = health(harness)
    assert status == 200 and body["oldestOverdueMs"] == 5_000


def test_health_is_503_when_the_dispatch_queue_is_gone(harness: Harness) -> None:
    harness.sqs.delete_queue(QueueUrl=harness.queue_url)
    status, body = health(harness)
    assert status == 503
    assert body == {"status": "unhealthy", "redis": "connected", "queue": "unreachable", "oldestOverdueMs": 0,
                    "evictionPolicy": "noeviction", "reason": "the dispatch queue does not answer"}
    harness.sqs.create_queue(QueueName=DEFAULT_DISPATCH_QUEUE)  # the fixture deletes it


def test_a_delivery_writes_a_json_line_and_metrics_without_secrets(
    harness: Harness, receiver: Receiver, lines: Lines, capsys: pytest.CaptureFixture[str]
) -> None:
    harness.post(message("m1", SOON, receiver.url, {"card": "4111-secret"}))
    harness.drain()
    receiver.wait_for(1)
    [delivery] = lines.of("delivery")
    assert delivery["messageId"] == "m1" and delivery["outcome"] == "delivered"
    assert delivery["attempt"] == 1 and delivery["latenessMs"] == 0  # the fake clock waited exactly
    assert delivery["service"] == "punctual" and delivery["level"] == "INFO"
    [request] = [r for r in lines.of("request") if r["method"] == "POST"]
    assert request["path"] == "/messages" and request["status"] == 200
    assert isinstance(request["durationMs"], float)
    out = capsys.readouterr().out
    assert metric_values(emf_blobs(out), "WebhookDeliveries") == [1.0]
    assert metric_values(emf_blobs(out), "WebhookLateness") == [0.0]
    logged = "\n".join(lines.lines) + out
    assert "4111-secret" not in logged and TOKEN not in logged


def test_a_past_dated_message_is_late_from_when_it_was_accepted(
    harness: Harness, receiver: Receiver, lines: Lines, capsys: pytest.CaptureFixture[str]
) -> None:
    """Delivered at once, as documented: its lateness is the time since the POST, not the years
    since its scheduleTo, in the log line and in the metric alike."""
    harness.post(message("old", "2020-01-01T00:00:00Z", receiver.url))
    harness.clock.advance(250)
    harness.drain()
    receiver.wait_for(1)
    [delivery] = lines.of("delivery")
    assert delivery["outcome"] == "delivered" and delivery["latenessMs"] == 250
    assert metric_values(emf_blobs(capsys.readouterr().out), "WebhookLateness") == [250.0]


def test_retries_and_failures_are_counted(harness: Harness, lines: Lines,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    rcv = Receiver(responder=lambda path, n: (503, {}))
    try:
        harness.configure(webhook_max_retries=1)
        harness.post(message("m2", SOON, rcv.url))
        harness.drain()
        rcv.wait_for(2)
    finally:
        rcv.stop()
    assert [(x["outcome"], x["attempt"], x["error"], x["level"]) for x in lines.of("delivery")] == [
        ("retry", 1, "HTTP 503", "INFO"), ("failed", 2, "HTTP 503", "WARNING"),
    ]
    blobs = emf_blobs(capsys.readouterr().out)
    assert metric_values(blobs, "WebhookRetries") == [1.0]
    assert metric_values(blobs, "WebhookFailures") == [1.0]
    assert metric_values(blobs, "WebhookDeliveries") == []


def test_a_request_line_names_the_path_and_the_route(harness: Harness, lines: Lines) -> None:
    assert harness.get("/messages/nope").status_code == 404
    [line] = lines.of("request")
    assert (line["method"], line["path"], line["route"], line["status"]) == (
        "GET", "/messages/nope", "/messages/{message_id}", 404)


def test_a_tick_writes_one_line_with_its_counts(harness: Harness, lines: Lines,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    harness.post(message("t1", LATER, "http://127.0.0.1:9/hook"))
    harness.clock.set(T0 + 3600_000 - 60_000)
    harness.tick()
    [tick] = lines.of("tick")
    assert tick["claimed"] == 1 and tick["handedOn"] is False and tick["durationMs"] >= 0
    assert metric_values(emf_blobs(capsys.readouterr().out), "TickClaimed") == [1.0]


def test_an_agent_run_writes_started_and_completed(harness: Harness, receiver: Receiver,
                                                   lines: Lines) -> None:
    status, _ = harness.api("POST", "/api/agents", {"id": "a1", "name": "A", "endpointUrl": receiver.url})
    assert status == 201
    assert harness.api("POST", "/api/agents/a1/run")[0] == 202
    harness.drain()
    receiver.wait_for(1)
    runs = lines.of("run")
    assert [(r["outcome"], r["attempt"], r["agentId"]) for r in runs] == [
        ("started", 1, "a1"), ("completed", 1, "a1"),
    ]
    assert runs[0]["runId"] == runs[1]["runId"] and runs[1]["durationMs"] == 0
    assert runs[0]["latenessMs"] == 0


def test_an_agents_error_text_is_cut(lines: Lines) -> None:
    observability.run("a", "r", "failed", 1, 0, 5, "x" * 5_000)
    [line] = lines.of("run")
    assert len(line["error"]) == observability.MAX_ERROR_CHARS + 1


def test_final_failures_are_warnings_and_survive_log_level_warning(
    lines: Lines, capsys: pytest.CaptureFixture[str]
) -> None:
    def attempts() -> None:
        observability.delivery("m", "retry", 1, 0, "HTTP 503")
        observability.delivery("m", "failed", 2, 0, "HTTP 503")
        observability.run("a", "r", "retry", 1, 0, 5, "boom")
        observability.run("a", "r", "failed", 2, 0, 5, "boom")

    attempts()
    seen = [(x["kind"], x["outcome"], x["level"]) for x in lines.of("delivery") + lines.of("run")]
    assert seen == [("delivery", "retry", "INFO"), ("delivery", "failed", "WARNING"),
                    ("run", "retry", "INFO"), ("run", "failed", "WARNING")]
    lines.lines.clear()
    before = observability.logger.log_level
    observability.logger.setLevel("WARNING")  # as LOG_LEVEL=WARNING sets it
    try:
        attempts()
    finally:
        observability.logger.setLevel(before)
    assert [(x["kind"], x["outcome"]) for x in lines.of("delivery") + lines.of("run")] == [
        ("delivery", "failed"), ("run", "failed"),
    ]
    observability.flush_metrics()  # this test's counts go no further
    capsys.readouterr()
