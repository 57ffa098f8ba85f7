"""Per-destination limits: a slow endpoint holds at most its share of calls, across dispatchers,
and what is over it waits in Redis, not on a thread."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from chalicelib import dispatcher
from chalicelib.claims import Claimed
from chalicelib.messages import Message
from chalicelib.services import Services
from chalicelib.store import WAITING
from chalicelib.targets import destination
from tests.conftest import T0, Harness, message
from tests.receiver import Receiver

SOON = "2030-01-01T00:00:30Z"
LIMIT = 2
FAR = T0 + 3_600_000
GRACE = 120_000  # the dispatch handler's deadline: time enough for everything


class Gate:
    """An endpoint's answers held until the test opens it; counts the calls under way."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self._lock = threading.Condition()
        self.under_way = 0
        self.most = 0

    def responder(self, path: str, attempt: int) -> tuple[int, dict[str, str]]:
        with self._lock:
            self.under_way += 1
            self.most = max(self.most, self.under_way)
            self._lock.notify_all()
        self.open.wait(20)
        with self._lock:
            self.under_way -= 1
        return 200, {}

    def wait_under_way(self, count: int) -> int:
        with self._lock:
            self._lock.wait_for(lambda: self.under_way >= count, timeout=10)
            return self.under_way


@pytest.fixture
def gate() -> Iterator[tuple[Gate, Receiver]]:
    held = Gate()
    endpoint = Receiver(responder=held.responder)
    yield held, endpoint
    held.open.set()
    endpoint.stop()


def second_dispatcher(harness: Harness, redis_url: str) -> Services:
    """Another dispatcher process: its own Redis connections, the same Redis, SQS and clock."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    return Services.build(harness.svc.settings, clock=harness.clock, redis_client=client,
                          sqs_client=harness.sqs, publisher=harness.published)


class Invocations:
    """Dispatch handler invocations on threads of their own; counts those that returned."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self._done = threading.Condition()
        self.returned = 0

    def start(self, svc: Services, body: str) -> threading.Thread:
        def run() -> None:
            try:
                svc.dispatcher.handle_bodies([body], lambda: FAR)
            finally:
                with self._done:
                    self.returned += 1
                    self._done.notify_all()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)
        return thread

    def wait_returned(self, count: int) -> int:
        with self._done:
            self._done.wait_for(lambda: self.returned >= count, timeout=10)
            return self.returned


def dispatch(svc: Services, body: str) -> threading.Thread:
    return Invocations().start(svc, body)


def test_calls_to_a_slow_destination_are_capped_across_dispatchers_and_the_rest_wait_without_a_thread(
    harness: Harness, gate: tuple[Gate, Receiver], receiver: Receiver, env: dict[str, str]
) -> None:
    held, slow = gate
    harness.configure(destination_max_calls=LIMIT)
    other = second_dispatcher(harness, env["REDIS_URL"])
    for i in range(5):
        harness.post(message(f"slow{i}", SOON, slow.url + "/hook"))
    bodies = [m["Body"] for m in harness.receive()]
    assert len(bodies) == 5
    invocations = Invocations()
    for i, body in enumerate(bodies):
        invocations.start(harness.svc if i % 2 else other, body)
    assert held.wait_under_way(LIMIT) == LIMIT
    # The three over the limit left their invocations at once: no thread waits on them.
    assert invocations.wait_returned(5 - LIMIT) == 5 - LIMIT and held.under_way == LIMIT
    keys = harness.svc.message_store.keys
    assert harness.redis.zcard(keys.flow(destination(slow.url)).waiting) == 5 - LIMIT

    # Another destination is not held up by the one that hangs.
    harness.post(message("fast", SOON, receiver.url + "/hook"))
    [fast] = [m["Body"] for m in harness.receive()]
    dispatch(harness.svc, fast).join(10)
    assert [r.json() for r in receiver.wait_for(1)] == [{"hello": "fast"}]

    held.open.set()  # the calls end; each hands the next waiting one on, in turn
    for thread in invocations.threads:
        thread.join(20)
    assert sorted(r.json()["hello"] for r in slow.wait_for(5)) == [f"slow{i}" for i in range(5)]
    assert len(slow.received) == 5 and held.most == LIMIT  # each once, never more than the limit at once
    assert harness.redis.zcard(keys.flow(destination(slow.url)).waiting) == 0
    assert harness.redis.zcard(keys.flow(destination(slow.url)).calls) == 0
    for i in range(5):
        assert json.loads(harness.get(f"/messages/slow{i}").body)["status"] == "delivered"


def test_a_dead_dispatcher_s_call_frees_its_share_when_its_lease_ends(
    harness: Harness, receiver: Receiver
) -> None:
    harness.configure(destination_max_calls=1)
    harness.post(message("first", SOON, receiver.url + "/hook"))
    harness.post(message("second", SOON, receiver.url + "/hook"))
    first, second = (Claimed.from_body(json.loads(m["Body"])) for m in harness.receive())
    store = harness.svc.message_store
    lease = T0 + 40_000
    # A dispatcher takes the only call, then dies before it posts.
    assert isinstance(store.begin_delivery(first, lease, T0, 1, GRACE), Message)
    assert store.begin_delivery(second, lease, T0 + 1, 1, GRACE) is WAITING  # the call is taken
    harness.clock.set(lease + 1)
    # Once the lease has passed the share is free again: the next claim for it goes ahead.
    harness.post(message("third", "2030-01-01T00:01:00Z", receiver.url + "/hook"))
    [third] = [m["Body"] for m in harness.receive()]
    harness.dispatch([third])
    # ...and when it ends it hands on the claim that waited for the dead one's call.
    assert [r.json() for r in receiver.wait_for(2)] == [{"hello": "third"}, {"hello": "second"}]


def test_a_message_deleted_while_it_waits_is_skipped_and_the_next_one_takes_its_call(
    harness: Harness, gate: tuple[Gate, Receiver]
) -> None:
    held, slow = gate
    harness.configure(destination_max_calls=1)
    for name in ("holder", "gone", "after"):
        harness.post(message(name, SOON, slow.url + "/hook"))
    holder, gone, after = (m["Body"] for m in harness.receive())
    running = dispatch(harness.svc, holder)
    assert held.wait_under_way(1) == 1
    dispatch(harness.svc, gone).join(10)  # both wait for the call
    dispatch(harness.svc, after).join(10)
    assert harness.delete("/messages/gone").status_code == 200
    held.open.set()
    running.join(20)
    assert [r.json() for r in slow.received] == [{"hello": "holder"}, {"hello": "after"}]
    keys = harness.svc.message_store.keys
    assert harness.redis.zcard(keys.flow(destination(slow.url)).calls) == 0


def test_destinations_are_scheme_host_and_port() -> None:
    assert destination("https://Hooks.Example.com/a?b=1") == "https://hooks.example.com:443"
    assert destination("http://hooks.example.com/x") == "http://hooks.example.com:80"
    assert destination("http://127.0.0.1:8080/x") == "http://127.0.0.1:8080"


def test_a_claim_carries_its_destination_through_sqs_bodies_and_group_rows() -> None:
    claim = Claimed("m:a", T0, "tok", dest="https://hooks.example.com:443")
    assert Claimed.from_body(json.loads(claim.to_body())) == claim
    assert Claimed.from_row(claim.to_row()) == claim
    # A claim sent before destinations were counted still reads, with no destination.
    assert Claimed.from_row(["m:a", "tok", T0, ""]).dest == ""
    old: dict[str, Any] = {"ref": "m:a", "token": "tok", "due": T0}
    assert Claimed.from_body(old).dest == ""


def test_a_hanging_destination_holds_at_most_its_share_of_an_invocation_s_threads(
    harness: Harness, gate: tuple[Gate, Receiver], receiver: Receiver
) -> None:
    held, slow = gate
    threads = dispatcher.DELIVERY_THREADS
    for i in range(threads):  # enough to take every delivery thread of the invocation
        harness.post(message(f"slow{i}", SOON, slow.url + "/hook"))
    harness.post(message("healthy", SOON, receiver.url + "/hook"))
    bodies = [m["Body"] for m in harness.receive()]
    assert len(bodies) == threads + 1
    # One invocation, the healthy message's item last in it.
    running = threading.Thread(target=harness.svc.dispatcher.handle_bodies, args=(bodies, lambda: FAR),
                               daemon=True)
    running.start()
    assert held.wait_under_way(dispatcher.DESTINATION_SHARE) == dispatcher.DESTINATION_SHARE
    # The healthy message went out while the slow ones hang, on a thread they were not given.
    assert [r.json() for r in receiver.wait_for(1)] == [{"hello": "healthy"}]
    assert held.under_way == dispatcher.DESTINATION_SHARE < threads
    held.open.set()
    running.join(30)
    assert len(slow.received) == threads and held.most == dispatcher.DESTINATION_SHARE
