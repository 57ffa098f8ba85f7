"""A failing or rate-limited destination holds back only its own webhooks: its circuit breaker,
a 429's Retry-After pausing its flow, and flow control (a key, its parallelism and its rate)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.claims import Claimed
from chalicelib.messages import Message
from chalicelib.store import BreakerOpen
from chalicelib.targets import destination
from chalicelib.timeutil import format_instant
from tests.conftest import T0, Harness, message
from tests.receiver import Receiver, answering
from tests.test_destinations import Gate, Invocations

SOON = "2030-01-01T00:00:30Z"
SOON_MS = T0 + 30_000
COOLDOWN_MS = 30_000


def claims(harness: Harness) -> list[Claimed]:
    return [Claimed.from_body(json.loads(m["Body"])) for m in harness.receive()]


def deliver(harness: Harness, *claimed: Claimed) -> None:
    harness.dispatch([c.to_body() for c in claimed])


def destinations(harness: Harness) -> dict[str, dict[str, Any]]:
    status, body = harness.api("GET", "/destinations")
    assert status == 200
    return {d["destination"]: d for d in body["destinations"]}


@pytest.fixture
def flaky() -> Any:
    """An endpoint that answers 503 until told to answer 200."""
    endpoint, answers = answering(503)
    yield endpoint, answers
    endpoint.stop()


# -- the circuit breaker ------------------------------------------------------------------


def open_the_breaker(harness: Harness, endpoint: Receiver, failures: int = 3) -> None:
    harness.configure(breaker_failures=failures, webhook_max_retries=10)
    for i in range(failures):
        harness.post(message(f"fail-{i}", SOON, endpoint.url + "/hook"))
    deliver(harness, *claims(harness))
    assert len(endpoint.received) == failures


def test_failures_in_a_row_open_the_breaker_and_its_deliveries_spend_retries_without_a_call(
    harness: Harness, flaky: Any
) -> None:
    endpoint, _ = flaky
    open_the_breaker(harness, endpoint)
    dest = destination(endpoint.url)
    shown = destinations(harness)[dest]
    assert shown["state"] == "open"
    assert shown["consecutiveFailures"] == 3
    assert shown["openUntil"] == format_instant(SOON_MS + COOLDOWN_MS)
    assert shown["recentCalls"] == 3 and shown["recentFailureRate"] == 1.0
    retries = claims(harness)  # the three failed messages' retries

    harness.post(message("while-open", "2030-01-01T00:00:31Z", endpoint.url + "/hook"))
    deliver(harness, *claims(harness))
    assert len(endpoint.received) == 3  # no call was made
    record = harness.read_message("while-open")
    assert record["attempts"] == 1 and record["status"] == "queued"
    assert "circuit breaker" in record["lastError"] and dest in record["lastError"]
    assert record["nextAttemptAt"] is not None  # on its retry schedule, never silently dropped
    # One customer's endpoint is not the scheduler's health.
    health = harness.get("/health")
    assert health.status_code == 200 and health.json_body["status"] == "healthy"
    assert retries


def test_a_probe_after_the_cool_down_closes_the_breaker(harness: Harness, flaky: Any) -> None:
    endpoint, answers = flaky
    open_the_breaker(harness, endpoint)
    probe, *others = claims(harness)
    answers["status"] = 200
    harness.clock.set(SOON_MS + COOLDOWN_MS)
    deliver(harness, probe)
    assert len(endpoint.received) == 4
    assert destinations(harness)[destination(endpoint.url)]["state"] == "closed"
    deliver(harness, *others)  # closed: they go too
    assert len(endpoint.received) == 6
    assert {harness.read_message(f"fail-{i}")["status"] for i in range(3)} == {"delivered"}


def test_a_failed_probe_opens_the_breaker_for_twice_as_long(harness: Harness, flaky: Any) -> None:
    endpoint, _ = flaky
    open_the_breaker(harness, endpoint)
    first, *others = claims(harness)
    harness.clock.set(SOON_MS + COOLDOWN_MS)
    deliver(harness, first)  # the probe: 503 again
    assert len(endpoint.received) == 4
    probed_at = harness.clock.now_ms()
    shown = destinations(harness)[destination(endpoint.url)]
    assert shown["state"] == "open"
    assert shown["openUntil"] == format_instant(probed_at + 2 * COOLDOWN_MS)
    deliver(harness, *[replace_due(c, probed_at) for c in others])
    assert len(endpoint.received) == 4  # open again: no call


def replace_due(claimed: Claimed, due_ms: int) -> Claimed:
    return Claimed(claimed.ref, due_ms, claimed.token, claimed.step, claimed.dest, claimed.flow)


def test_only_one_probe_goes_while_the_breaker_is_half_open(harness: Harness, flaky: Any) -> None:
    endpoint, _ = flaky
    open_the_breaker(harness, endpoint)
    first, second, _ = claims(harness)
    store = harness.svc.message_store
    now = SOON_MS + COOLDOWN_MS
    lease = now + 40_000
    assert destinations(harness)[destination(endpoint.url)]["state"] == "open"
    harness.clock.set(now)
    assert destinations(harness)[destination(endpoint.url)]["state"] == "half-open"
    assert isinstance(store.begin_delivery(first, lease, now, 256, 120_000), Message)  # the probe
    held_back = store.begin_delivery(second, lease, now, 256, 120_000)
    assert isinstance(held_back, BreakerOpen) and held_back.probe_at_ms == lease


def test_a_message_fails_by_the_retry_rules_while_the_breaker_stays_open(
    harness: Harness, flaky: Any
) -> None:
    endpoint, _ = flaky
    open_the_breaker(harness, endpoint)
    harness.configure(breaker_failures=3, webhook_max_retries=2)
    claims(harness)  # the earlier messages' retries are left waiting
    harness.post(message("doomed", "2030-01-01T00:00:31Z", endpoint.url + "/hook"))
    harness.drain()
    record = harness.read_message("doomed")
    assert record["status"] == "failed" and record["attempts"] == 3
    assert "circuit breaker" in record["lastError"]
    assert len(endpoint.received) == 3


def test_a_breaker_on_one_destination_leaves_the_others_alone(
    harness: Harness, flaky: Any, receiver: Receiver
) -> None:
    endpoint, _ = flaky
    open_the_breaker(harness, endpoint)
    harness.post(message("healthy", "2030-01-01T00:00:31Z", receiver.url + "/hook"))
    deliver(harness, *[c for c in claims(harness) if c.ref == "m:healthy"])
    assert [r.json() for r in receiver.received] == [{"hello": "healthy"}]
    assert destinations(harness)[destination(receiver.url)]["state"] == "closed"


def test_four_hundreds_say_the_destination_is_up(harness: Harness) -> None:
    endpoint = Receiver(responder=lambda path, n: (404, {}))
    try:
        harness.configure(breaker_failures=2)
        for i in range(3):
            harness.post(message(f"gone-{i}", SOON, endpoint.url + "/hook"))
        deliver(harness, *claims(harness))
        assert len(endpoint.received) == 3
        assert destinations(harness)[destination(endpoint.url)]["state"] == "closed"
    finally:
        endpoint.stop()


# -- Retry-After pauses the flow ----------------------------------------------------------


def test_a_429_with_retry_after_pauses_every_message_of_its_destination(harness: Harness) -> None:
    def responder(path: str, attempt: int) -> tuple[int, dict[str, str]]:
        return (429, {"Retry-After": "20"}) if path == "/limited" and attempt == 1 else (200, {})

    endpoint = Receiver(responder=responder)
    try:
        harness.post(message("first", SOON, endpoint.url + "/limited"))
        harness.post(message("second", "2030-01-01T00:00:31Z", endpoint.url + "/other"))
        first, second = sorted(claims(harness), key=lambda c: c.due_ms)
        deliver(harness, first)
        paused_until = SOON_MS + 20_000
        assert destinations(harness)[destination(endpoint.url)]["pausedUntil"] == format_instant(paused_until)
        deliver(harness, second)
        assert len(endpoint.received) == 1  # paused: not called, and no attempt spent
        record = harness.read_message("second")
        assert record["attempts"] == 0 and record["status"] == "queued"
        assert record["nextAttemptAt"] == format_instant(paused_until)
        later = {c.ref: c for c in claims(harness)}
        assert later["m:second"].due_ms == paused_until
        deliver(harness, later["m:second"], later["m:first"])
        assert {harness.read_message(m)["status"] for m in ("first", "second")} == {"delivered"}
    finally:
        endpoint.stop()


# -- flow control -------------------------------------------------------------------------


@pytest.mark.parametrize(("flow", "says"), [
    ("tenant", "must be an object"),
    ({}, "needs parallelism, ratePerSecond or both"),
    ({"key": "t"}, "needs parallelism"),
    ({"parallelism": 0}, "parallelism must be a whole number from 1 to 1000"),
    ({"parallelism": 1.5}, "parallelism must be a whole number"),
    ({"parallelism": True}, "parallelism must be a whole number"),
    ({"parallelism": 1001}, "parallelism must be a whole number"),
    ({"ratePerSecond": 0}, "ratePerSecond must be a number from 0.01 to 1000"),
    ({"ratePerSecond": "10"}, "ratePerSecond must be a number"),
    ({"ratePerSecond": 1e9}, "ratePerSecond must be a number"),
    ({"key": "", "parallelism": 1}, "flowControl.key must not be empty"),
    ({"key": "a/b", "parallelism": 1}, "flowControl.key must not contain '/'"),
    ({"key": 7, "parallelism": 1}, "flowControl.key is required and must be a string"),
    ({"parallelism": 1, "burst": 3}, "unknown field(s): burst"),
])
def test_flow_control_is_validated(harness: Harness, receiver: Receiver, flow: Any, says: str) -> None:
    response = harness.post({**message("m", SOON, receiver.url), "flowControl": flow})
    assert response.status_code == 400
    assert says in response.json_body["detail"]
    assert harness.get("/messages/m").status_code == 404  # nothing was stored


def test_flow_control_is_kept_and_shown(harness: Harness, receiver: Receiver) -> None:
    flow = {"key": "tenant-7", "parallelism": 2, "ratePerSecond": 0.5}
    assert harness.post({**message("m", SOON, receiver.url), "flowControl": flow}).status_code == 200
    assert harness.read_message("m")["flowControl"] == flow
    harness.post(message("plain", SOON, receiver.url))
    assert "flowControl" not in harness.read_message("plain")


def test_a_key_s_parallelism_holds_across_destinations(harness: Harness) -> None:
    held = Gate()
    one, two = Receiver(responder=held.responder), Receiver(responder=held.responder)
    try:
        flow = {"key": "tenant-7", "parallelism": 1}
        for name, endpoint in (("a", one), ("b", two), ("c", one)):
            harness.post({**message(name, SOON, endpoint.url + "/hook"), "flowControl": flow})
        invocations = Invocations()
        for claimed in claims(harness):
            invocations.start(harness.svc, claimed.to_body())
        assert held.wait_under_way(1) == 1
        assert invocations.wait_returned(2) == 2  # the other two wait in Redis, not on a thread
        assert held.under_way == 1
        held.open.set()
        for thread in invocations.threads:
            thread.join(20)
        assert held.most == 1
        assert len(one.received) + len(two.received) == 3
    finally:
        held.open.set()
        one.stop()
        two.stop()


def test_a_key_s_rate_spreads_its_starts(harness: Harness, receiver: Receiver) -> None:
    flow = {"key": "slow-api", "ratePerSecond": 2}
    for i in range(5):
        harness.post({**message(f"r{i}", SOON, receiver.url + "/hook"), "flowControl": flow})
    deliver(harness, *claims(harness))
    assert len(receiver.received) == 2  # two starts in the first second
    later = claims(harness)
    assert sorted(c.due_ms for c in later) == [SOON_MS + 500] * 3
    assert {harness.read_message(c.ref[2:])["attempts"] for c in later} == {0}
    harness.clock.set(SOON_MS + 500)
    deliver(harness, *later)
    assert len(receiver.received) == 3  # one more half a second on
    harness.drain()
    assert len(receiver.received) == 5
    starts = sorted(harness.svc.message_store.get_message(f"r{i}").finished_ms or 0 for i in range(5))
    assert starts[-1] - starts[0] >= 1500  # five starts at two a second take 1.5 s at least
