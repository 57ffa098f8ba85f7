"""Webhook messages over hash-slot shards (chalicelib/shards.py), on a real Redis Cluster.

Placement (a message's keys share its shard's slot, the shards sit on different primaries), the
listing merged over shards with its cursor while messages come and go, a change of REDIS_SHARDS
with messages pending, and a tick with one shard's primary gone.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from redis.cluster import key_slot

from chalicelib import services
from chalicelib.config import Settings
from chalicelib.errors import Unavailable
from chalicelib.keys import Keys, shard_names
from chalicelib.messages_api import create_message
from chalicelib.redis_client import cluster_client
from chalicelib.services import Services
from chalicelib.shards import HELD, REGISTRY_TTL_SECONDS, Shards
from chalicelib.targets import destination
from chalicelib.timeutil import format_instant
from emulator.redis_cluster import LocalCluster
from tests.conftest import T0, TOKEN, FakeClock, Harness, RecordingPublisher, RedisServers, message
from tests.receiver import Receiver

LATER = T0 + 3_600_000  # claimed by a tick
SOON = "2030-01-01T00:00:30Z"


def at(ms: int) -> str:
    return format_instant(ms)


def post_ok(harness: Harness, body: dict[str, Any]) -> None:
    response = harness.post(body)
    assert response.status_code == 200, response.body


def delivered_ids(receiver: Receiver, count: int) -> Counter[str]:
    return Counter(r.json()["hello"] for r in receiver.wait_for(count))


@pytest.mark.parametrize("redis_server", ["cluster"], indirect=True)
def test_a_message_and_what_indexes_it_share_its_shards_slot(
    harness: Harness, receiver: Receiver, redis_servers: RedisServers
) -> None:
    store = harness.svc.message_store
    assert store.shards.current.count == 3  # the default on a cluster
    cluster = redis_servers.get("cluster")
    assert isinstance(cluster, LocalCluster)
    shards = store.shards.current.shards
    # One shard on each of the three primaries, none in the agents' slot.
    assert len({cluster.primary_of(keys.due) for keys in shards}) == 3
    assert key_slot(store.keys.due.encode()) not in {key_slot(keys.due.encode()) for keys in shards}

    ids = [f"p{i}" for i in range(30)]
    for name in ids:
        post_ok(harness, message(name, at(LATER + 1_000), receiver.url))
    dest = destination(receiver.url)
    for name in ids:
        keys = store.shards.home(name)
        slot = key_slot(keys.message(name).encode())
        flow = keys.flow(dest)
        for key in (keys.due, keys.inflight, keys.pending_messages, keys.failed_messages, keys.message_counts,
                    keys.sweep(LATER), keys.stats_minute(LATER), flow.calls, flow.waiting, flow.state,
                    keys.breaker(dest), keys.destinations):
            assert key_slot(key.encode()) == slot, key
        assert harness.redis.hget(keys.message(name), "status") == "scheduled"
        assert harness.redis.zscore(keys.due, f"m:{name}") == LATER + 1_000
        assert harness.redis.zscore(keys.pending_messages, name) == LATER + 1_000
    held = [harness.redis.zcard(keys.pending_messages) for keys in shards]
    assert sum(held) == 30 and min(held) > 0  # spread over every shard
    assert harness.redis.zcard(store.keys.pending_messages) == 0  # nothing under the bare head

    # Messages with one flow-control key go to one shard, where their flow is counted exactly;
    # they are still found by id.
    flowing = [f"f{i}" for i in range(6)]
    for name in flowing:
        post_ok(harness, {**message(name, at(LATER + 2_000), receiver.url),
                          "flowControl": {"key": "tenant-7", "parallelism": 1}})
    assert len({store.locate(name)[0].shard for name in flowing}) == 1
    for name in flowing:
        assert harness.read_message(name)["flowControl"] == {"key": "tenant-7", "parallelism": 1}
    # An id is still one message over the shards: a flowing message's id is held in its id's
    # own shard by a marker, which points lookups to it and goes with it.
    flow_shard = store.locate(flowing[0])[0].shard
    away = next(name for name in flowing if store.shards.home(name).shard != flow_shard)
    assert harness.redis.hget(store.shards.home(away).message(away), "status") == "elsewhere"
    assert harness.post(message(away, SOON, receiver.url)).status_code == 409
    flowing_p0 = {**message("p0", SOON, receiver.url), "flowControl": {"key": "tenant-7", "parallelism": 1}}
    assert harness.post(flowing_p0).status_code == 409
    assert harness.delete(f"/messages/{away}").status_code == 200
    assert not harness.redis.exists(store.shards.home(away).message(away))
    assert harness.get(f"/messages/{away}").status_code == 404
    flowing.remove(away)
    post_ok(harness, message(away, at(LATER + 3_000), receiver.url))
    ids.append(away)

    harness.clock.set(LATER - 60_000)
    harness.tick()
    harness.drain()
    assert delivered_ids(receiver, 36) == Counter(ids + flowing)
    listing = json.loads(harness.get("/messages").body)
    assert listing == {"scheduledJobs": [], "count": 0, "nextCursor": None}


@pytest.mark.parametrize("redis_server", ["cluster"], indirect=True)
def test_the_listing_merges_the_shards_in_due_order_while_messages_come_and_go(
    harness: Harness, receiver: Receiver
) -> None:
    # Pairs due together: within a due time the order is by id, in every shard alike.
    due = {f"l{i:02d}": LATER + (i // 2) * 1_000 for i in range(24)}
    for name, ms in due.items():
        post_ok(harness, message(name, at(ms), receiver.url))
    expected = dict(due)

    def page(cursor: str | None) -> dict[str, Any]:
        query = "/messages?limit=5" + (f"&cursor={cursor}" if cursor else "")
        return dict(json.loads(harness.get(query).body))

    seen: list[str] = []
    first = page(None)
    seen += [job["messageId"] for job in first["scheduledJobs"]]
    assert first["count"] == 24
    # Between pages: one lands before the cursor (already passed: not shown), one after it (shown
    # in its place), one not yet shown is deleted, one already shown is deleted.
    post_ok(harness, message("a-early", at(LATER - 1), receiver.url))
    post_ok(harness, message("l08b", at(due["l08"]), receiver.url))
    expected["l08b"] = due["l08"]
    assert harness.delete("/messages/l15").status_code == 200
    del expected["l15"]
    assert harness.delete("/messages/l01").status_code == 200
    cursor = first["nextCursor"]
    counts = []
    while cursor:
        body = page(cursor)
        counts.append(body["count"])
        seen += [job["messageId"] for job in body["scheduledJobs"]]
        for job in body["scheduledJobs"]:
            assert job["nextRun"] == at(expected.get(job["messageId"], LATER - 1))
        cursor = body["nextCursor"]
    assert counts[0] == 24 + 2 - 2
    after_first = [name for name in sorted(expected, key=lambda name: (expected[name], name))
                   if name not in seen[:5]]
    assert seen == seen[:5] + after_first  # each once, in due then id order, across the shards
    assert len(set(seen)) == len(seen)


def test_a_shard_change_with_messages_pending_loses_none(harness: Harness, receiver: Receiver) -> None:
    store = harness.svc.message_store
    assert store.shards.current.count == 1  # the default on a plain Redis
    old = [f"old{i}" for i in range(10)]
    for name in old:
        post_ok(harness, message(name, at(LATER + 1_000), receiver.url))
    post_ok(harness, message("done-before", SOON, receiver.url))
    harness.drain()
    assert delivered_ids(receiver, 1) == Counter(["done-before"])
    assert not harness.redis.exists(store.keys.shards)  # one shard needs no registry

    harness.configure(redis_shards=3)
    store = harness.svc.message_store
    new = [f"new{i}" for i in range(10)]
    for name in new:
        post_ok(harness, message(name, at(LATER + 2_000), receiver.url))
    assert store.read_layouts() == {1: HELD, 3: HELD}
    assert all(store.locate(name)[0].shard for name in new)  # in the new layout's shards
    assert all(store.locate(name)[0].shard == "" for name in old)  # where they were
    # The old layout is read: its messages are found, listed, deleted, and hold their ids.
    assert harness.read_message("old3")["status"] == "scheduled"
    assert harness.read_message("done-before")["status"] == "delivered"
    assert harness.post(message("old4", SOON, receiver.url)).status_code == 409
    listing = json.loads(harness.get("/messages?limit=100").body)
    assert [job["messageId"] for job in listing["scheduledJobs"]] == old + new and listing["count"] == 20
    assert harness.delete("/messages/old9").status_code == 200

    harness.clock.set(LATER - 60_000)
    harness.tick()
    harness.drain()
    assert delivered_ids(receiver, 1 + 19) == Counter(["done-before", *old[:9], *new])
    # The next tick finds the old layout empty; its delivered messages stay readable while kept.
    harness.tick()
    assert store.read_layouts()[1] != HELD
    store.shards.forget_registry()
    assert harness.read_message("old0")["status"] == "delivered"
    assert harness.post(message("old0", at(LATER + 5_000), receiver.url)).status_code == 200
    assert store.locate("old0")[0].shard  # a new message under a delivered id goes to the new layout


@pytest.fixture
def fragile_cluster() -> Iterator[LocalCluster]:
    """A cluster of three primaries that serves the slots it can when one primary is gone, as
    ElastiCache does (cluster-require-full-coverage no)."""
    cluster = LocalCluster(primaries=3, options=("--cluster-require-full-coverage", "no"))
    yield cluster
    cluster.stop()


def test_a_tick_with_one_shard_unreachable_serves_the_others_and_health_names_it(
    fragile_cluster: LocalCluster, aws: Any, clock: FakeClock, receiver: Receiver
) -> None:
    settings = Settings.from_env({"REDIS_URL": fragile_cluster.url, "API_TOKEN": TOKEN, "PUNCTUAL_LOCAL": "1",
                                  "DISPATCH_LEAD_SECONDS": "900"})
    client = cluster_client(fragile_cluster.url)  # the app's own, with its retries
    svc = Services.build(settings, clock=clock, redis_client=client, sqs_client=aws,
                         publisher=RecordingPublisher())
    services.install(svc)
    try:
        store = svc.message_store
        ids = [f"u{i}" for i in range(30)]
        for name in ids:
            create_message(svc, json.dumps(message(name, at(LATER + 1_000), receiver.url)).encode())
        lost = store.shards.current.shards[0]
        lost_port = fragile_cluster.primary_of(lost.due)
        assert lost_port != fragile_cluster.primary_of(store.keys.due)  # the agents' slot stays up
        in_lost = {name for name in ids if store.shards.home(name).shard == lost.shard}
        assert 0 < len(in_lost) < len(ids)
        fragile_cluster.processes[fragile_cluster.ports.index(lost_port)].kill()

        clock.set(LATER - 60_000)
        report = svc.scheduler.tick(clock.now_ms() + 60_000)
        assert report.failed_shards == (lost.head,)
        assert report.claimed == len(ids) - len(in_lost)
        sent = aws.receive_message(QueueUrl=svc.dispatch_queue.url, MaxNumberOfMessages=10)["Messages"]
        assert refs_in([m["Body"] for m in sent]) == {f"m:{name}" for name in ids if name not in in_lost}

        report = svc.health.detail()
        assert report.status == 503 and report.body["status"] == "unhealthy"
        assert f"shard {lost.head} does not answer" in report.body["reason"]
        assert report.body["redis"] == "connected"  # the other shards answer
    finally:
        services.install(None)
        client.close()


def test_shard_names_spread_over_the_slot_space() -> None:
    for count in (2, 3, 4, 6):
        names = shard_names("punctual", count)
        slots = sorted(key_slot(Keys("punctual", True, name).due.encode()) for name in names)
        gaps = [(b - a) for a, b in zip(slots, [*slots[1:], slots[0] + 16384], strict=True)]
        assert max(gaps) - min(gaps) < 16384 // count // 4, (count, slots)
    assert shard_names("punctual", 1) == ("",)


def test_the_registry_is_reread_after_its_time() -> None:
    now = [0.0]
    registry = {3: HELD}
    shards = Shards(Keys(), 1, lambda: dict(registry), monotonic=lambda: now[0])
    assert [layout.count for layout in shards.draining()] == [3]
    registry[3] = "1234"  # drained
    assert [layout.count for layout in shards.draining()] == [3]  # not read again yet
    now[0] += REGISTRY_TTL_SECONDS
    assert shards.draining() == []
    # A registry that cannot be read leaves the last one read in use, and is read at next use.
    registry[3] = HELD
    failing = [True]

    def read() -> dict[int, str]:
        if failing[0]:
            raise Unavailable("storage is unavailable")
        return dict(registry)

    shards = Shards(Keys(), 1, read, monotonic=lambda: now[0])
    assert shards.draining() == []  # only what it knows: its own layout
    failing[0] = False
    assert [layout.count for layout in shards.draining()] == [3]


def refs_in(bodies: list[str]) -> set[str]:
    """The refs SQS bodies carry, single or grouped."""
    refs = set()
    for body in map(json.loads, bodies):
        refs |= {row[0] for row in body["items"]} if body.get("kind") == "group" else {body["ref"]}
    return refs
