"""The local stack's Lambda: a container per concurrent invocation, and what a dead worker process
held handed back to SQS (emulator/containers.py, emulator/held.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib import threads
from emulator.containers import Function
from emulator.held import HeldLog, read_held, release_orphans

ROOT = Path(__file__).resolve().parent.parent


def test_each_concurrent_invocation_has_its_own_delivery_threads() -> None:
    """One invocation's calls hang on every thread of its pool; another's still run at once."""
    hung = threading.Event()
    release = threading.Event()
    pools: dict[str, object] = {}

    def handler(event: dict[str, Any], context: Any) -> None:
        pool = threads.pool("deliver", 2)
        pools[event["name"]] = pool
        if event["name"] == "slow":
            calls = [pool.submit(release.wait, 30) for _ in range(2)]  # every thread of the pool
            hung.set()
            for call in calls:
                call.result()
        else:
            assert pool.submit(lambda: "sent").result(timeout=5) == "sent"

    function = Function("dispatch", handler, concurrency=2)
    finished: dict[str, threading.Event] = {"slow": threading.Event(), "healthy": threading.Event()}
    stopping = threading.Event()
    try:
        assert function.reserve(stopping)
        function.invoke({"name": "slow"}, lambda ok: finished["slow"].set())
        assert hung.wait(5)
        assert function.reserve(stopping)
        function.invoke({"name": "healthy"}, lambda ok: finished["healthy"].set())
        assert finished["healthy"].wait(5), "the healthy invocation waited for the slow one's threads"
        assert pools["slow"] is not pools["healthy"]
        assert not finished["slow"].is_set()
    finally:
        release.set()
    assert finished["slow"].wait(5)
    assert function.containers == 2


def test_a_warm_container_is_reused_and_concurrency_is_capped() -> None:
    pools: list[object] = []
    done = threading.Semaphore(0)

    def handler(event: dict[str, Any], context: Any) -> None:
        pools.append(threads.pool("deliver", 1))

    function = Function("dispatch", handler, concurrency=1)
    stopping = threading.Event()
    for _ in range(3):
        assert function.reserve(stopping)
        function.invoke({}, lambda ok: done.release())
        assert done.acquire(timeout=5)
    assert function.containers == 1
    assert pools[0] is pools[1] is pools[2]  # the container keeps its pools, as Lambda keeps a container warm
    # The one slot taken: a poller waits (and gives up when the worker stops).
    assert function.reserve(stopping)
    stopping.set()
    assert not function.reserve(stopping)


# -- what a dead worker process held ---------------------------------------------------------


@pytest.fixture
def queue(moto_sqs: Any) -> Iterator[str]:
    url = moto_sqs.create_queue(QueueName=f"held-{uuid.uuid4().hex[:8]}",
                                Attributes={"VisibilityTimeout": "90"})["QueueUrl"]
    yield url
    moto_sqs.delete_queue(QueueUrl=url)


def receive(sqs: Any, url: str, count: int = 10) -> list[dict[str, Any]]:
    return list(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=count, WaitTimeSeconds=0)
                .get("Messages", []))


HOLDER = """
import sys
from pathlib import Path
from emulator.held import HeldLog
log = HeldLog(Path(sys.argv[1]))
log.hold(sys.argv[2], sys.argv[3:])
print("holding", flush=True)
sys.stdin.read()
"""


def holder(directory: Path, url: str, receipts: list[str]) -> subprocess.Popen[str]:
    """A worker process that holds `receipts`, until it is killed."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory), url, *receipts], cwd=ROOT,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline() == "holding\n"
    return process


def test_what_a_killed_worker_held_is_visible_again_at_once(
    tmp_path: Path, moto_sqs: Any, queue: str
) -> None:
    for i in range(3):
        moto_sqs.send_message(QueueUrl=queue, MessageBody=f"m{i}")
    held = receive(moto_sqs, queue)
    assert len(held) == 3
    process = holder(tmp_path, queue, [m["ReceiptHandle"] for m in held])
    try:
        assert release_orphans(tmp_path, moto_sqs) == 0  # its holder lives: left alone
        assert receive(moto_sqs, queue) == []
        process.send_signal(signal.SIGKILL)
        process.wait()
        # Without the hand-back they would come back only after the 90 s visibility timeout.
        assert release_orphans(tmp_path, moto_sqs) == 3
        assert sorted(m["Body"] for m in receive(moto_sqs, queue)) == ["m0", "m1", "m2"]
        assert list(tmp_path.glob("*.held")) == []  # swept once
        assert release_orphans(tmp_path, moto_sqs) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_what_was_let_go_or_handled_is_not_handed_back(tmp_path: Path, moto_sqs: Any, queue: str) -> None:
    moto_sqs.send_message(QueueUrl=queue, MessageBody="handled")
    moto_sqs.send_message(QueueUrl=queue, MessageBody="held")
    messages = {m["Body"]: m["ReceiptHandle"] for m in receive(moto_sqs, queue)}
    log = HeldLog(tmp_path)
    log.hold(queue, messages.values())
    moto_sqs.delete_message(QueueUrl=queue, ReceiptHandle=messages["handled"])
    log.let_go([messages["handled"]])
    assert read_held(log.path.read_text()) == {messages["held"]: queue}
    log.close()  # still holding one: the file stays for the next worker process
    assert release_orphans(tmp_path, moto_sqs) == 1
    assert [m["Body"] for m in receive(moto_sqs, queue)] == ["held"]


def test_a_log_cut_short_by_a_death_is_read_up_to_its_last_whole_line() -> None:
    text = "+\tq1\tr1\n+\tq1\tr2\n-\tr1\n+\tq2\tr3\n+\tq2"
    assert read_held(text) == {"r2": "q1", "r3": "q2"}


def test_a_compacted_log_keeps_only_what_is_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("emulator.held.COMPACT_BYTES", 200)
    log = HeldLog(tmp_path)
    for i in range(20):
        log.hold("q", [f"r{i}"])
        if i % 2:
            log.let_go([f"r{i}"])
    assert read_held(log.path.read_text()) == {f"r{i}": "q" for i in range(0, 20, 2)}
    assert log.path.stat().st_size < 20 * len("+\tq\tr00\n") + 10 * len("-\tr00\n")
    assert [p.name for p in tmp_path.iterdir()] == [log.path.name]  # no temporary file left
    log.close()
