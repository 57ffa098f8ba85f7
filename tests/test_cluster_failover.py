"""A primary fails over in the middle of a burst: every message is accepted, and delivered once.

The cluster has a replica per primary; CLUSTER FAILOVER, sent to the replica of the primary that
holds Punctual's slot, promotes it while requests are in flight. The client meets MOVED from the
demoted primary (and, for a command caught at the switch, a connection error) and its retries
carry every command to the new primary. A manual failover waits until the replica has caught up,
so nothing acknowledged is lost (README, "Redis").
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from emulator.redis_cluster import LocalCluster
from tests.conftest import T0, Harness, RedisServers, message
from tests.receiver import Receiver

SOON = "2030-01-01T00:00:30Z"  # sent to SQS by the API
LATER = "2030-01-01T00:10:00Z"  # claimed by a tick
COUNT = 240

pytestmark = pytest.mark.parametrize("redis_server", ["replicated"], indirect=True)


class Failover(threading.Thread):
    """Fails over the primary of `slot_key`, from another thread; keeps when it ran."""

    def __init__(self, cluster: LocalCluster, slot_key: str) -> None:
        super().__init__()
        self.cluster, self.primary = cluster, cluster.primary_of(slot_key)
        self.promoted = 0
        self.began = self.ended = 0.0
        self.start()

    def run(self) -> None:
        self.began = time.monotonic()
        self.promoted = self.cluster.fail_over(self.primary)
        self.ended = time.monotonic()


def test_a_failover_mid_burst_loses_and_doubles_nothing(
    harness: Harness, receiver: Receiver, redis_servers: RedisServers
) -> None:
    cluster = redis_servers.get("replicated")
    assert isinstance(cluster, LocalCluster)
    slot_key = harness.svc.message_store.keys.due
    ids = [f"m{i}" for i in range(COUNT)]

    answered: list[float] = []

    def post(i: int) -> int:
        due = SOON if i % 2 else LATER
        status = int(harness.post(message(ids[i], due, receiver.url + "/hook")).status_code)
        answered.append(time.monotonic())
        return status

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(post, range(COUNT // 2)))
        failover = Failover(cluster, slot_key)
        statuses += list(pool.map(post, range(COUNT // 2, COUNT)))
    failover.join()
    assert statuses == [200] * COUNT
    assert cluster.primary_of(slot_key) == failover.promoted != failover.primary
    # Requests were in flight while the primary changed, and were answered after it.
    assert any(t > failover.ended for t in answered) and any(failover.began <= t for t in answered)

    # Deliver what the API sent to SQS, then what the tick claims, failing over again (back to
    # the first primary) while the tick's deliveries go on.
    harness.drain()
    harness.clock.set(T0 + 540_000)
    harness.tick()
    back = Failover(cluster, slot_key)
    harness.drain()
    back.join()

    got = receiver.wait_for(COUNT)
    deliveries = Counter(r.headers["webhook-id"] for r in got)
    assert sorted(deliveries) == sorted(ids)
    assert max(deliveries.values()) == 1
    assert cluster.primary_of(slot_key) == back.promoted == failover.primary
