"""The local stack heals itself: a worker process killed outright is replaced, as Lambda replaces a
container, and what it held is delivered, once."""

from __future__ import annotations

import collections
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import boto3

from emulator.launcher import Stack, descendants
from tests.e2e.test_webhooks_e2e import at
from tests.receiver import Receiver

BURST = 40
# Well inside the dispatch queue's 90 s visibility timeout (after which SQS alone would hand out
# again what the killed process held) and the queue's grace.
DEADLINE_AFTER_DUE = 20.0


def workers(stack: Stack) -> list[int]:
    assert stack.process is not None
    found = []
    for pid in descendants(stack.process.pid):
        try:
            if b"emulator.workers" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def queue_counts(sqs: Any, url: str) -> dict[str, int]:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
             "ApproximateNumberOfMessagesDelayed"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return {name: int(attributes[name]) for name in names}


def poll(what: str, predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"never: {what}")


def test_a_burst_held_by_a_killed_worker_is_delivered_in_full_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    # One worker process, so the one killed holds the whole burst; the burst reaches it 10 s
    # before it is due, and waits there. Without the hand-back, the tick would re-send it only
    # once the queue's grace has passed after its due time (60 s here, 120 s under `make run`).
    stack = Stack(tmp_path / "heal", WORKER_PROCESSES="1", DISPATCH_LEAD_SECONDS="10",
                  QUEUE_GRACE_SECONDS="60").start()
    try:
        endpoint, queue_url = re.search(r"AWS +.*?: (\S+), queue (\S+)", stack.banner).groups()  # type: ignore[union-attr]
        sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=stack.env.get("AWS_REGION", "us-east-1"),
                           aws_access_key_id="test", aws_secret_access_key="test")
        ids = [f"held-{i}" for i in range(BURST)]
        when, due = at(16)  # one instant: one sweep, one SQS message holding the whole burst
        for id in ids:
            response = stack.call("POST", "/messages", {"id": id, "scheduleTo": when, "payload": {"n": id},
                                                        "webhookUrl": receiver.url + "/held"})
            assert response.status_code == 200, response.text

        def held_by_the_worker() -> bool:
            counts = queue_counts(sqs, queue_url)
            statuses = {stack.call("GET", f"/messages/{id}").json()["status"] for id in ids}
            waiting = counts["ApproximateNumberOfMessages"] + counts["ApproximateNumberOfMessagesDelayed"]
            held = counts["ApproximateNumberOfMessagesNotVisible"]
            return statuses == {"queued"} and held == 1 and not waiting

        poll("the worker holds the burst", held_by_the_worker, timeout=14)
        time.sleep(0.5)  # it has written down what it holds (a batch received in the instant of
        assert held_by_the_worker()  # the kill would come back only after its visibility timeout)
        [killed] = workers(stack)
        assert time.time() < due - 1, "the burst fell due before the worker could be killed"
        os.kill(killed, signal.SIGKILL)

        poll("a new worker process", lambda: [p for p in workers(stack) if p != killed], timeout=15)
        receiver.wait_for(BURST, timeout=due + DEADLINE_AFTER_DUE - time.time())
        assert stack.process is not None and stack.process.poll() is None  # the stack lives on
        for id in ids:
            message = stack.wait_until(f"/messages/{id}", lambda m: m["status"] == "delivered")
            assert message["attempts"] == 1
        time.sleep(1)  # a duplicate would arrive now (it would be a second claim; none is made)
        arrivals = collections.Counter(r.json()["n"] for r in receiver.for_path("/held"))  # type: ignore[index]
        assert sorted(arrivals) == sorted(ids)
        duplicates = sum(n - 1 for n in arrivals.values())
        assert duplicates == 0
        latest = max(r.at for r in receiver.for_path("/held"))
        print(f"{BURST} held by the killed worker: all delivered, {duplicates} duplicates, "
              f"the last {latest - due:.3f} s after due")
    finally:
        if stack.process and stack.process.poll() is None:
            stack.stop()
