"""GET /stats: counts by status, the last hour minute by minute, agent runs, in bounded Redis memory."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.claims import Claimed
from chalicelib.stats import LATENESS_BOUNDS_MS, STATS_TTL_SECONDS, lateness_bucket, percentile
from chalicelib.timeutil import format_instant
from tests.conftest import T0, Harness, message
from tests.receiver import Receiver

SOON = "2030-01-01T00:00:30Z"
SOON_MS = T0 + 30_000
LATER = "2030-01-01T01:00:00Z"
FAR = T0 + 3_600_000


def stats(harness: Harness) -> dict[str, Any]:
    status, body = harness.api("GET", "/stats")
    assert status == 200, body
    return dict(body)


def minute(body: dict[str, Any], at_ms: int) -> dict[str, Any]:
    [row] = [row for row in body["minutes"] if row["minute"] == format_instant(at_ms // 60_000 * 60_000)]
    return row


def test_counts_by_status_follow_each_transition(harness: Harness, receiver: Receiver) -> None:
    harness.post(message("later", LATER, receiver.url))
    for i in range(3):
        harness.post(message(f"soon-{i}", SOON, receiver.url))
    counts = stats(harness)["messages"]
    assert counts == {"scheduled": 1, "queued": 3, "delivering": 0, "delivered": 0, "failed": 0,
                      "pending": 4, "overdue": 0, "failedHeld": 0}
    harness.clock.set(SOON_MS + 5_000)  # past due, not delivered yet
    assert stats(harness)["messages"]["overdue"] == 3
    assert harness.delete("/messages/soon-2").status_code == 200
    harness.drain()
    counts = stats(harness)["messages"]
    assert counts == {"scheduled": 1, "queued": 0, "delivering": 0, "delivered": 2, "failed": 0,
                      "pending": 1, "overdue": 0, "failedHeld": 0}
    # Claimed by the tick, begun by a dispatcher that then dies: the tick reclaims it once its
    # lease has passed and claims it again.
    harness.clock.set(FAR - 100_000)
    harness.tick()
    [sent] = harness.receive()
    assert stats(harness)["messages"]["queued"] == 1
    store = harness.svc.message_store
    assert store.begin_delivery(Claimed.from_body(json.loads(sent["Body"])), FAR + 40_000, FAR, 256, 120_000)
    assert stats(harness)["messages"] | {"overdue": 0} == {
        "scheduled": 0, "queued": 0, "delivering": 1, "delivered": 2, "failed": 0, "pending": 1, "overdue": 0,
        "failedHeld": 0}
    harness.clock.set(FAR + 60_000)  # the first two deliveries have left the last hour too
    harness.tick()
    assert stats(harness)["messages"] == {
        "scheduled": 0, "queued": 1, "delivering": 0, "delivered": 0, "failed": 0, "pending": 1, "overdue": 1,
        "failedHeld": 0}
    harness.drain()
    assert stats(harness)["messages"] == {
        "scheduled": 0, "queued": 0, "delivering": 0, "delivered": 1, "failed": 0, "pending": 0, "overdue": 0,
        "failedHeld": 0}


def test_messages_under_way_before_the_counters_existed_leave_them_exact(
    harness: Harness, receiver: Receiver
) -> None:
    for i in range(3):
        harness.post(message(f"old-{i}", SOON, receiver.url))
    for keys in harness.svc.message_store.shards.listed():  # as an upgrade finds them
        harness.redis.delete(keys.message_counts)
    assert stats(harness)["messages"]["scheduled"] == 3
    harness.drain()
    harness.post(message("new", SOON, receiver.url))
    counts = stats(harness)["messages"]
    assert (counts["scheduled"], counts["queued"], counts["delivering"]) == (0, 1, 0)
    counts_key = harness.svc.message_store.shards.home("new").message_counts
    assert harness.redis.hget(counts_key, "queued") == "1"
    assert int(harness.redis.hget(counts_key, "delivering") or 0) == 0


def test_each_minute_counts_deliveries_failures_retries_and_lateness(harness: Harness) -> None:
    endpoint = Receiver(responder=lambda path, n: (500, {}) if path == "/flaky" and n == 1
                        else (404, {}) if path == "/gone" else (200, {}))
    try:
        for i in range(10):
            harness.post(message(f"late-{i}", SOON, endpoint.url + "/ok"))
        harness.post(message("flaky", SOON, endpoint.url + "/flaky"))
        harness.post(message("gone", SOON, endpoint.url + "/gone"))
        harness.clock.set(SOON_MS + 40)  # the dispatcher starts 40 ms late
        harness.drain()
    finally:
        endpoint.stop()
    body = stats(harness)
    assert len(body["minutes"]) == 60 and body["minutes"][-1]["minute"] == "2030-01-01T00:00:00.000Z"
    assert body["minutes"][0]["minute"] == "2029-12-31T23:01:00.000Z"
    row = minute(body, SOON_MS)
    # Twelve calls 40 ms late, and the flaky one's retry on time (after its backoff).
    assert (row["delivered"], row["failed"], row["retried"]) == (11, 1, 1)
    low, high = LATENESS_BOUNDS_MS[4], LATENESS_BOUNDS_MS[5]  # the 20-50 ms bucket
    assert (low, high) == (20, 50)
    assert low <= row["latenessP50Ms"] <= row["latenessP99Ms"] <= high
    assert body["messages"]["delivered"] == 11 and body["messages"]["failed"] == 1
    assert body["messages"]["failedHeld"] == 1
    quiet = [r for r in body["minutes"] if r is not row]
    assert all(r["delivered"] == r["failed"] == r["retried"] == 0 and r["latenessP50Ms"] is None
               for r in quiet)
    # An hour on, that minute has left the view.
    harness.clock.set(SOON_MS + 3_600_000)
    later = stats(harness)
    assert sum(r["delivered"] for r in later["minutes"]) == 0 and later["messages"]["delivered"] == 0


def test_agent_runs_are_counted_by_outcome(harness: Harness) -> None:
    agent = Receiver(responder=lambda path, n: (200, {}) if path == "/good" else (503, {}))
    try:
        for name in ("good", "bad"):
            harness.api("POST", "/api/agents",
                        {"id": name, "name": name, "endpointUrl": f"{agent.url}/{name}"})
            harness.api("POST", f"/api/agents/{name}/run")
        harness.drain()
    finally:
        agent.stop()
    body = stats(harness)
    assert body["agentRuns"] == {"completed": 1, "failed": 1, "retried": 3, "timedOut": 0}
    assert body["scheduler"]["maxConcurrentAgents"] == harness.svc.settings.max_concurrent_agents


def test_a_timed_out_run_is_counted(harness: Harness) -> None:
    agent = Receiver(responder=lambda path, n: (202, {}))
    try:
        harness.configure(agent_max_retries=0)
        harness.api("POST", "/api/agents", {"id": "slow", "name": "slow", "endpointUrl": agent.url,
                                            "timeoutSeconds": 5})
        harness.api("POST", "/api/agents/slow/run")
        harness.drain()  # the call, then its timeout check, 5 s on
    finally:
        agent.stop()
    assert stats(harness)["agentRuns"] == {"completed": 0, "failed": 1, "retried": 0, "timedOut": 1}


def test_minute_buckets_are_bounded_and_expire(harness: Harness, receiver: Receiver) -> None:
    *ids, last = harness.ids_in_one_shard("n", 22)  # each shard keeps its own buckets
    for name in ids:  # twenty-one deliveries in one minute, then one in the next
        harness.post(message(name, format_instant(T0 + 30_000), receiver.url))
    harness.drain()
    harness.post(message(last, format_instant(T0 + 90_000), receiver.url))
    harness.drain()
    shard = harness.svc.message_store.shards.home(last)
    keys = [shard.stats_minute(T0 + i * 60_000) for i in range(2)]
    assert sorted(harness.redis.scan_iter(f"{shard.head}:stats:*")) == sorted(keys)
    for key in keys:
        assert 0 < harness.redis.ttl(key) <= STATS_TTL_SECONDS
    # A minute's hash holds counts, not entries: twenty-one deliveries take what one does.
    assert harness.redis.hgetall(keys[0]) == {"d0": "21"}  # delivered, less than 1 ms late
    assert harness.redis.memory_usage(keys[0]) == harness.redis.memory_usage(keys[1])


@pytest.mark.parametrize("lateness, bucket", [(0, 0), (1, 1), (49, 5), (50, 6), (299_999, 15), (10**9, 16)])
def test_lateness_buckets(lateness: int, bucket: int) -> None:
    assert lateness_bucket(lateness) == bucket


def test_percentiles_read_off_the_histogram() -> None:
    counts = [0] * (len(LATENESS_BOUNDS_MS) + 1)
    assert percentile(counts, 0.5) is None
    counts[5] = 100  # 100 calls between 20 and 50 ms
    assert percentile(counts, 0.5) == 35.0 and percentile(counts, 0.99) == 49.7
    counts[16] = 2  # two beyond 300 s: the open bucket answers its lower bound
    assert percentile(counts, 0.99) == 300_000.0
