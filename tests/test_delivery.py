"""Tick and dispatch handlers driven with generated events, moto SQS and an injected clock."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib.claims import message_ref
from chalicelib.clock import FakeClock
from chalicelib.dispatch_queue import Handoff
from chalicelib.scheduler import Scheduler, TickReport
from chalicelib.sender import HttpSender
from tests.conftest import T0, Harness, message
from tests.receiver import Receiver

SOON = "2030-01-01T00:00:30Z"  # inside the API's direct-send window
LATER = "2030-01-01T01:00:00Z"  # left for the tick
URL_UNUSED = "http://127.0.0.1:9/never-called"


def refs_in(bodies: list[str]) -> list[str]:
    """The items SQS messages carry, one or a group each (the scheduler's own work carries none)."""
    refs = []
    for body in map(json.loads, bodies):
        refs += [row[0] for row in body["items"]] if body.get("kind") == "group" else [body.get("ref")]
    return [ref for ref in refs if ref]


def status_of(harness: Harness, message_id: str) -> dict:
    return json.loads(harness.get(f"/messages/{message_id}").body)


def test_message_due_soon_is_delivered_once_on_time_with_headers(
    harness: Harness, receiver: Receiver
) -> None:
    harness.post(message("m1", SOON, receiver.url + "/hook", {"order": 42}))
    assert status_of(harness, "m1")["status"] == "queued"
    assert harness.drain() == 1
    [got] = receiver.wait_for(1)
    assert got.json() == {"order": 42}
    assert got.headers["webhook-id"] == "m1"
    assert got.headers["webhook-timestamp"] == str((T0 + 30_000) // 1000)
    assert got.headers["content-type"] == "application/json"
    # The dispatcher waited until the due instant on the injected clock.
    assert harness.clock.now_ms() == T0 + 30_000
    shown = status_of(harness, "m1")
    assert shown["status"] == "delivered" and shown["attempts"] == 1
    assert shown["deliveredAt"] == "2030-01-01T00:00:30.000Z"
    listing = json.loads(harness.get("/messages").body)
    assert listing["count"] == 0 and listing["scheduledJobs"] == []
    # Delivered messages stay readable for the retention period only.
    ttl = harness.redis.ttl(harness.message_key("m1"))
    assert 86_000 < ttl <= 86_400


def test_a_finished_message_frees_its_id_and_a_pending_one_does_not(
    harness: Harness, receiver: Receiver
) -> None:
    harness.post(message("again", SOON, receiver.url + "/hook", {"n": 1}))
    harness.drain()
    assert status_of(harness, "again")["status"] == "delivered"
    # The same id again: the new message replaces the delivered one's record whole.
    response = harness.post(message("again", LATER, receiver.url + "/hook", {"n": 2}))
    assert response.status_code == 200, response.body
    shown = status_of(harness, "again")
    assert shown["status"] == "scheduled" and shown["payload"] == {"n": 2}
    assert shown["attempts"] == 0 and shown["deliveredAt"] is None
    assert harness.redis.ttl(harness.message_key("again")) == -1  # kept until done
    # Pending now: the id is taken.
    taken = harness.post(message("again", LATER, receiver.url + "/hook", {"n": 3}))
    assert taken.status_code == 409 and "not delivered yet" in json.loads(taken.body)["detail"]
    assert status_of(harness, "again")["payload"] == {"n": 2}


def test_signature_header_when_a_secret_is_set(harness: Harness, receiver: Receiver) -> None:
    from standardwebhooks.webhooks import Webhook

    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    harness.configure(webhook_secret=secret)
    harness.post(message("signed", SOON, receiver.url))
    harness.drain()
    [got] = receiver.wait_for(1)
    sent_at = datetime.fromtimestamp(int(got.headers["webhook-timestamp"]), tz=UTC)
    expected = Webhook(secret).sign("signed", sent_at, got.body.decode())
    assert got.headers["webhook-signature"] == expected


def test_tick_claims_only_inside_its_window(harness: Harness, receiver: Receiver) -> None:
    harness.post(message("later", LATER, receiver.url))
    assert status_of(harness, "later")["status"] == "scheduled"
    assert harness.tick()["claimed"] == 0
    assert harness.receive() == []
    harness.clock.set(T0 + 3600_000 - 100_000)  # 100 s before due: inside the 120 s window
    assert harness.tick()["claimed"] == 1
    assert status_of(harness, "later")["status"] == "queued"
    harness.drain()
    assert len(receiver.wait_for(1)) == 1
    assert harness.clock.now_ms() == T0 + 3600_000
    assert status_of(harness, "later")["status"] == "delivered"


def test_past_due_message_is_delivered_at_once(harness: Harness, receiver: Receiver) -> None:
    harness.post(message("past", "2020-01-01T00:00:00Z", receiver.url))
    harness.drain()
    assert len(receiver.wait_for(1)) == 1
    assert harness.clock.now_ms() == T0  # nothing waited


def test_retries_with_backoff_then_delivers(harness: Harness) -> None:
    rcv = Receiver(responder=lambda path, n: (500, {}) if n <= 2 else (200, {}))
    try:
        harness.post(message("flaky", SOON, rcv.url))
        harness.drain()
        got = rcv.wait_for(3)
        assert len(got) == 3
        shown = status_of(harness, "flaky")
        assert shown["status"] == "delivered" and shown["attempts"] == 3
        assert shown["lastError"] == "HTTP 500"
        # 1 s after the first failure, 2 s after the second, on the injected clock.
        assert harness.clock.now_ms() == T0 + 30_000 + 1_000 + 2_000
    finally:
        rcv.stop()


def test_retries_are_spent_then_failed(harness: Harness) -> None:
    rcv = Receiver(responder=lambda path, n: (503, {}))
    try:
        harness.post(message("down", SOON, rcv.url))
        harness.drain()
        assert len(rcv.wait_for(4)) == 4  # first try + WEBHOOK_MAX_RETRIES (3)
        shown = status_of(harness, "down")
        assert shown["status"] == "failed" and shown["attempts"] == 4
        assert shown["lastError"] == "HTTP 503" and shown["failedAt"] is not None
        assert harness.clock.now_ms() == T0 + 30_000 + 1_000 + 2_000 + 4_000
        assert json.loads(harness.get("/messages").body)["count"] == 0
        assert harness.receive() == []
        # A failed message frees its id too: sent again, it starts afresh.
        assert harness.post(message("down", LATER, rcv.url)).status_code == 200
        again = status_of(harness, "down")
        assert again["status"] == "scheduled" and again["attempts"] == 0 and again["lastError"] is None
    finally:
        rcv.stop()


def test_client_errors_fail_at_once(harness: Harness) -> None:
    rcv = Receiver(responder=lambda path, n: (404, {}))
    try:
        harness.post(message("nope", SOON, rcv.url))
        harness.drain()
        assert len(rcv.received) == 1
        assert status_of(harness, "nope")["status"] == "failed"
    finally:
        rcv.stop()


def test_retry_after_is_honoured(harness: Harness) -> None:
    rcv = Receiver(responder=lambda path, n: (429, {"Retry-After": "20"}) if n == 1 else (200, {}))
    try:
        harness.post(message("slow", SOON, rcv.url))
        harness.drain()
        assert len(rcv.wait_for(2)) == 2
        assert harness.clock.now_ms() == T0 + 30_000 + 20_000
    finally:
        rcv.stop()


def test_connection_refused_is_retried(harness: Harness) -> None:
    harness.post(message("refused", SOON, "http://127.0.0.1:9/hook"))
    harness.drain()
    shown = status_of(harness, "refused")
    assert shown["status"] == "failed" and shown["attempts"] == 4
    assert "connection failed" in shown["lastError"]


def test_a_target_is_checked_again_at_delivery(harness: Harness, receiver: Receiver) -> None:
    harness.post(message("rebound", SOON, receiver.url))  # accepted: local mode allows 127.0.0.1
    # Outside local mode the same target is refused when it is due, as a public host whose
    # DNS now points inside the network would be: failed for good, never called.
    harness.configure(local_mode=False)
    harness.drain()
    assert receiver.received == []
    shown = status_of(harness, "rebound")
    assert shown["status"] == "failed" and shown["attempts"] == 1
    assert "webhookUrl resolves to an internal address" in shown["lastError"]


def test_deleted_before_due_is_never_delivered(harness: Harness, receiver: Receiver) -> None:
    harness.post(message("cancel", SOON, receiver.url))
    assert harness.delete("/messages/cancel").status_code == 200
    assert harness.drain() == 1  # the SQS message arrives, finds nothing to claim
    assert receiver.received == []


def test_duplicate_sqs_messages_deliver_once(harness: Harness, receiver: Receiver) -> None:
    harness.post(message("twice", SOON, receiver.url))
    [sqs_message] = harness.receive()
    harness.dispatch([sqs_message["Body"]] * 3)  # one batch, three copies, in parallel
    harness.dispatch([sqs_message["Body"]])
    assert len(receiver.received) == 1


def test_concurrent_ticks_claim_each_message_once(harness: Harness, receiver: Receiver) -> None:
    for i in range(100):
        harness.post(message(f"c{i}", LATER, receiver.url))
    harness.clock.set(T0 + 3600_000 - 60_000)
    reports: list[dict] = []
    svc = harness.svc
    svc.scheduler.__dict__["_batch"] = 7  # many small claims, so the ticks interleave

    def run() -> None:
        reports.append(svc.scheduler.tick(svc.clock.now_ms() + 60_000).to_dict())

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r["claimed"] for r in reports) == 100
    bodies = [m["Body"] for m in harness.receive()]
    assert sorted(refs_in(bodies)) == sorted(message_ref(f"c{i}") for i in range(100))
    # Every SQS message twice, the second time in another batch: each webhook still goes once.
    harness.dispatch(bodies + bodies[:1])
    harness.dispatch(bodies)
    ids = sorted(r.json()["hello"] for r in receiver.wait_for(100))
    assert ids == sorted(f"c{i}" for i in range(100))


def test_crashed_dispatcher_lease_expires_and_the_tick_redelivers(
    harness: Harness, receiver: Receiver
) -> None:
    harness.post(message("crash", SOON, receiver.url))
    [sqs_message] = harness.receive()
    body = json.loads(sqs_message["Body"])
    from chalicelib.claims import Claimed

    # A dispatcher claims it and dies before posting.
    claimed = Claimed.from_body(body)
    limit = harness.svc.settings.destination_max_calls
    assert harness.svc.message_store.begin_delivery(claimed, T0 + 60_000, T0, limit, 120_000) is not None
    assert status_of(harness, "crash")["status"] == "delivering"
    assert harness.delete("/messages/crash").status_code == 409
    harness.clock.set(T0 + 60_001)
    assert harness.tick()["reclaimed"] == 1
    harness.dispatch([sqs_message["Body"]])  # the stale SQS message is dropped
    assert receiver.received == []
    harness.drain()
    assert len(receiver.wait_for(1)) == 1
    shown = status_of(harness, "crash")
    assert shown["status"] == "delivered" and shown["attempts"] == 2


def test_lost_sqs_message_is_reclaimed_after_the_grace(harness: Harness, receiver: Receiver) -> None:
    harness.post(message("lost", SOON, receiver.url))
    harness.receive()  # SQS loses it
    harness.clock.set(T0 + 30_000 + 120_000 - 1)
    assert harness.tick()["reclaimed"] == 0
    harness.clock.advance(1)
    report = harness.tick()
    assert report["reclaimed"] == 1 and report["claimed"] == 1
    harness.drain()
    assert len(receiver.wait_for(1)) == 1


def test_failed_sqs_send_keeps_the_message(harness: Harness, receiver: Receiver) -> None:
    good_url = harness.svc.dispatch_queue.url
    harness.svc.dispatch_queue.__dict__["_queue_url"] = good_url + "-missing"
    response = harness.post(message("kept", SOON, receiver.url))
    assert response.status_code == 200  # accepted: it is stored, and the tick recovers it
    harness.svc.dispatch_queue.__dict__["_queue_url"] = good_url
    assert harness.receive() == []
    report = harness.tick()
    assert report["reclaimed"] == 1 and report["claimed"] == 1
    harness.drain()
    assert len(receiver.wait_for(1)) == 1


def tick_in_twos_beside_a_rival(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, script: str, first_item_args: int
) -> tuple[TickReport, Any]:
    """A tick that claims two at a time while another tick runs `script` on the first ref this
    one has just read, just before this one's own call; returns the report and the rival's answer."""
    store = harness.svc.message_store
    queue = harness.svc.dispatch_queue
    scheduler = Scheduler(store, queue, Handoff(queue, store, harness.clock), harness.clock,
                          harness.svc.settings, harness.svc.runner, claim_batch=2)
    run_script = store.scripts.run
    rival: list[Any] = []

    def beside_a_rival(name: str, keys: list[str], args: list[object]) -> object:
        if name == script and not rival:
            rival.append(run_script(name, keys[:4], args[:first_item_args]))  # its fixed keys and one item
        return run_script(name, keys, args)

    monkeypatch.setattr(store.scripts, "run", beside_a_rival)
    report = scheduler.tick(T0 + 3_600_000)
    return report, rival[0]


def test_a_tick_goes_on_when_another_claimer_took_part_of_its_batch(
    harness: Harness, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that comes back short because a concurrent tick or sweep claimed some of the refs
    read is no sign that nothing more is due: the rest must not wait for the next tick."""
    for name in harness.ids_in_one_shard("w", 5):  # one shard's batches
        harness.post(message(name, LATER, receiver.url))
    harness.clock.set(T0 + 3_600_000 - 60_000)
    report, rival = tick_in_twos_beside_a_rival(harness, monkeypatch, "claim_due", 4)
    # ...and the rival claimed one (ref, due, token, url, flow key)
    assert report.claimed == 4 and len(rival) == 5
    assert sum(harness.redis.zcard(keys.due) for keys in harness.svc.message_store.shards.claimed()) == 0


def test_a_tick_goes_on_reclaiming_when_another_took_part_of_its_batch(
    harness: Harness, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in harness.ids_in_one_shard("l", 3):  # one shard's batches
        harness.post(message(name, SOON, receiver.url))
    assert len(harness.receive()) == 3  # and SQS loses them
    harness.clock.set(T0 + 30_000 + 120_000)  # past the queue grace
    report, rival = tick_in_twos_beside_a_rival(harness, monkeypatch, "reclaim", 2)
    assert report.reclaimed == 2 and rival == 1
    harness.drain()
    assert len(receiver.wait_for(3)) == 3  # all three delivered in this tick's round


def test_tick_hands_on_what_it_cannot_finish(harness: Harness, receiver: Receiver) -> None:
    ids = harness.ids_in_one_shard("h", 120)
    for name in ids:
        harness.post(message(name, LATER, receiver.url))
    harness.clock.set(T0 + 3600_000 - 60_000)
    svc = harness.svc
    svc.scheduler.__dict__["_batch"] = 20

    class Ticking(FakeClock):
        def now_ms(self) -> int:  # every look at the clock costs 10 s
            self.advance(10_000)
            return super().now_ms()

    clock = Ticking(harness.clock.now_ms())
    svc.scheduler.__dict__["_clock"] = clock
    # Each other shard (they are empty) looks at the clock once, in whatever order the tick's
    # threads run: its time is added, so the loaded shard claims some, not all, before the end.
    others = len(svc.message_store.shards.claimed()) - 1
    report = svc.scheduler.tick(clock.now_ms() + 25_000 + others * 10_000).to_dict()
    assert report["handedOn"] and 0 < report["claimed"] < 120
    bodies = [m["Body"] for m in harness.receive()]
    assert sum(1 for b in bodies if json.loads(b).get("kind") == "tick") == 1
    svc.scheduler.__dict__["_clock"] = harness.clock
    harness.dispatch([b for b in bodies if json.loads(b).get("kind") == "tick"])
    rest = [m["Body"] for m in harness.receive()]
    assert sorted(refs_in(bodies + rest)) == sorted(message_ref(name) for name in ids)


def test_malformed_sqs_bodies_are_dropped(harness: Harness) -> None:
    harness.dispatch(["not json", "{}", '{"ref": "x:1", "token": "t", "due": 1}', "[]", '{"kind": "fanout"}',
                      '{"kind": "fanout", "id": "f", "endpoint": "e", "connections": "c1", "message": {}}'])
    assert harness.receive() == []


def delayed_in_queue(harness: Harness) -> int:
    attributes = harness.sqs.get_queue_attributes(
        QueueUrl=harness.queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessagesDelayed"])


def at(offset_ms: int) -> str:
    """T0 + offset as the API shows instants."""
    moment = datetime.fromtimestamp((T0 + offset_ms) / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_messages_of_one_second_share_one_sweep(harness: Harness, receiver: Receiver) -> None:
    # With the deployed lead (2 s), messages inside the window wait for one sweep per due second.
    harness.configure(lead_seconds=2)
    ids = harness.ids_in_one_shard("s", 4)  # sweeps are per shard
    for name, offset in zip(ids, [30_200, 30_500, 30_900, 31_100], strict=True):
        assert harness.post(message(name, at(offset), receiver.url)).status_code == 200
    # Two sweeps (seconds 30 and 31) wait in SQS, held back until 2 s before their second.
    assert delayed_in_queue(harness) == 2 and harness.receive() == []
    assert {status_of(harness, m)["status"] for m in ids} == {"scheduled"}
    # The sweep of second 30 arrives 2 s early: it claims the first three and sends them as one group.
    harness.clock.set(T0 + 28_500)
    harness.dispatch([harness.sweep_body(T0 + 30_000, ids[0])])
    assert [status_of(harness, m)["status"] for m in ids] == ["queued", "queued", "queued", "scheduled"]
    [group] = harness.receive()
    assert refs_in([group["Body"]]) == [message_ref(m) for m in ids[:3]]
    harness.dispatch([group["Body"]])
    got = receiver.wait_for(3)
    assert sorted(r.json()["hello"] for r in got) == sorted(ids[:3])
    # Each went out at its own instant, not at the group's first (the fake clock moves as the
    # dispatcher waits, so a delivery is recorded at or after its instant).
    assert harness.clock.now_ms() == T0 + 30_900
    for m, offset in zip(ids[:3], [30_200, 30_500, 30_900], strict=True):
        assert status_of(harness, m)["deliveredAt"] >= at(offset)
    # A second sweep of the same second finds nothing left to claim.
    harness.dispatch([harness.sweep_body(T0 + 30_000, ids[0])])
    assert harness.receive() == []


def test_a_message_created_after_its_second_was_swept_is_claimed_at_once(harness: Harness) -> None:
    harness.configure(lead_seconds=2)
    first, late = harness.ids_in_one_shard("swept", 2)  # sweeps are per shard
    harness.post(message(first, at(40_100), URL_UNUSED))
    harness.dispatch([harness.sweep_body(T0 + 40_000, first)])
    assert status_of(harness, first)["status"] == "queued"
    # Same second, after its sweep: no sweep would come for it, so its own POST claims and sends it.
    before = delayed_in_queue(harness)
    harness.post(message(late, at(40_800), URL_UNUSED))
    assert status_of(harness, late)["status"] == "queued"
    assert delayed_in_queue(harness) == before + 1


def test_a_lost_sweep_is_asked_for_again_and_the_tick_is_the_backstop(
    harness: Harness, receiver: Receiver
) -> None:
    harness.configure(lead_seconds=2)
    good_url = harness.svc.dispatch_queue.url
    harness.svc.dispatch_queue.__dict__["_queue_url"] = good_url + "-missing"
    assert harness.post(message("x1", at(50_100), receiver.url)).status_code == 200
    harness.svc.dispatch_queue.__dict__["_queue_url"] = good_url
    # The sweep was not sent: the next message of that second asks for it again.
    harness.post(message("x2", at(50_200), receiver.url))
    assert delayed_in_queue(harness) == 1
    # Had that failed too, the tick claims both: they wait in the due index, not lost.
    harness.clock.set(T0 + 49_000)
    assert harness.tick()["claimed"] == 2
    harness.drain()
    assert sorted(r.json()["hello"] for r in receiver.wait_for(2)) == ["x1", "x2"]


def test_an_item_is_handed_on_when_the_invocation_lacks_time_to_deliver_it(
    harness: Harness, receiver: Receiver
) -> None:
    harness.post(message("handed", SOON, receiver.url))
    [sqs_message] = harness.receive()
    # An invocation that must stop in 5 s: too little for a webhook with a 10 s timeout.
    harness.svc.dispatcher.handle_bodies([sqs_message["Body"]], lambda: harness.clock.now_ms() + 5_000)
    assert receiver.received == [] and status_of(harness, "handed")["status"] == "queued"
    [again] = harness.receive()
    assert again["Body"] == sqs_message["Body"]  # the same claim: still its only one
    harness.dispatch([again["Body"]])
    assert len(receiver.wait_for(1)) == 1 and status_of(harness, "handed")["attempts"] == 1


def test_connections_to_a_target_are_opened_before_the_due_instant(
    harness: Harness, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in "abc":
        harness.post(message(name, SOON, receiver.url + "/hook"))
    at_due: list[tuple[int, int]] = []
    sleep_until = harness.clock.sleep_until

    def watching(when_ms: int) -> None:
        if when_ms == T0 + 30_000 and not at_due:
            # What the target had seen when the dispatcher began to wait for the due instant.
            at_due.append((receiver.wait_for_connections(3, timeout=2), len(receiver.received)))
        sleep_until(when_ms)

    monkeypatch.setattr(harness.clock, "sleep_until", watching)
    harness.dispatch([m["Body"] for m in harness.receive()])  # one batch, as SQS hands it out
    assert sorted(r.json()["hello"] for r in receiver.wait_for(3)) == ["a", "b", "c"]
    # Three connections were open and waiting before the instant, and the deliveries used them.
    assert at_due == [(3, 0)]
    assert receiver.connections == 3


def test_warming_opens_each_connection_once_and_never_to_an_internal_target(receiver: Receiver) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        sender = HttpSender(5, allow_internal=True)
        assert sender.warm(receiver.url, 3, 1.0, pool) == 3
        assert receiver.wait_for_connections(3) == 3
        assert sender.warm(receiver.url, 3, 1.0, pool) == 0  # they are open already
        assert sender.warm("http://127.0.0.1:9", 2, 1.0, pool) == 0  # nothing listens: no error
        # Outside local mode a loopback target is refused at delivery, so it is not connected to.
        assert HttpSender(5, allow_internal=False).warm(receiver.url, 3, 1.0, pool) == 0
    assert receiver.connections == 3
    assert receiver.received == []


def test_warming_does_not_wait_out_a_name_lookup_that_hangs() -> None:
    looking_up = threading.Event()
    release = threading.Event()
    lookups: list[bool] = []  # per lookup: ended by the test (True) or by its own timeout

    def hanging_resolver(host: str, port: int) -> list[str]:
        looking_up.set()
        lookups.append(release.wait(3))
        return ["198.51.100.7"]

    sender = HttpSender(5, allow_internal=False, resolver=hanging_resolver)
    with ThreadPoolExecutor(max_workers=2) as pool:
        try:
            # It gives up once its time is up, with the lookups still hanging: the due instant
            # it warms up for is not missed waiting on DNS.
            assert sender.warm("http://hooks.example.com/x", 2, 0.2, pool) == 0
            assert looking_up.is_set()
        finally:
            release.set()
    assert lookups == [True]  # one lookup serves every connection it opens
