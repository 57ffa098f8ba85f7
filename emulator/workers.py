"""The local event sources: an EventBridge-like ticker and Lambda's SQS pollers.

Run as `python -m emulator.workers [--ticker]`. For each SQS handler of the app (`dispatch` on the
dispatch queue, `fanout` on the fan-out queue), SQS_POLLERS threads long-poll its queue and invoke
the handler with the SQS event Lambda would build, in batches of the size the handler declares, up
to LAMBDA_CONCURRENCY invocations at once; a batch is deleted only when the handler returns, as
Lambda's event source mapping does. The ticker invokes
`tick` with a scheduled event at start and then every TICK_INTERVAL_SECONDS.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from chalice.app import SQSEventConfig

from .aws_local import sqs_client
from .lambda_runtime import LambdaContext, scheduled_event, sqs_event
from .processes import configure_logging

log = logging.getLogger("punctual.workers")

Handler = Callable[[dict[str, Any], Any], Any]

LAMBDA_TIMEOUT_MS = 60_000
# The queue each SQS handler of the app consumes (emulator/stack.py creates them).
QUEUE_URL_VARIABLES = {"dispatch": "DISPATCH_QUEUE_URL", "fanout": "FANOUT_QUEUE_URL"}
POLL_WAIT_SECONDS = 20
SHUTDOWN_GRACE_SECONDS = 20


class Invoker:
    """Lambda's concurrency: up to `limit` handler invocations at once, each on one batch."""

    def __init__(self, handler: Handler, limit: int) -> None:
        self._handler = handler
        self._slots = threading.BoundedSemaphore(limit)
        self._pool = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="lambda")
        self._running = 0
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        """A handler is running (a poller merely waiting on a long poll is not)."""
        with self._lock:
            return self._running > 0

    def reserve(self, stopping: threading.Event) -> bool:
        """Wait for a free slot (a poller receives only what can run at once)."""
        while not stopping.is_set():
            if self._slots.acquire(timeout=0.5):
                return True
        return False

    def release(self) -> None:
        """Give back a reserved slot that no invocation used."""
        self._slots.release()

    def submit(self, event: dict[str, Any], done: Callable[[bool], None]) -> None:
        """Run the handler on a reserved slot; the slot is freed when it returns."""
        with self._lock:
            self._running += 1

        def run() -> None:
            ok = False
            try:
                self._handler(event, LambdaContext(budget_ms=LAMBDA_TIMEOUT_MS))
                ok = True
            except Exception:
                # Like Lambda: the batch stays, and comes back after the visibility timeout.
                log.exception("the dispatch handler failed; the batch will be received again")
            finally:
                done(ok)
                with self._lock:
                    self._running -= 1
                self._slots.release()

        self._pool.submit(run)


class Poller(threading.Thread):
    """One of the event source mapping's pollers: long-polls, and hands each batch to a Lambda.

    A few pollers feed many invocations, as on AWS; every long poll waiting on moto is woken
    by every send, so pollers are kept few.
    """

    def __init__(self, name: str, invoker: Invoker, sqs: Any, queue_url: str, queue_arn: str,
                 region: str, batch_size: int, stopping: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self._invoker = invoker
        self._sqs = sqs
        self._url = queue_url
        self._arn = queue_arn
        self._region = region
        self._batch_size = batch_size
        self._stopping = stopping

    def run(self) -> None:
        while self._invoker.reserve(self._stopping):
            messages = self._receive()
            if not messages:
                self._invoker.release()
            elif self._stopping.is_set():
                self._give_back(messages)
                self._invoker.release()
            else:
                event = sqs_event(messages, self._arn, self._region)
                self._invoker.submit(event, lambda ok, batch=messages: ok and self._acknowledge(batch))

    def _receive(self) -> list[dict[str, Any]]:
        try:
            got = self._sqs.receive_message(
                QueueUrl=self._url,
                MaxNumberOfMessages=self._batch_size,
                WaitTimeSeconds=POLL_WAIT_SECONDS,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
        except (BotoCoreError, ClientError) as exc:
            log.warning("receiving from the dispatch queue failed: %s", exc)
            self._stopping.wait(1)
            return []
        return list(got.get("Messages", []))

    def _acknowledge(self, messages: list[dict[str, Any]]) -> None:
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        try:
            self._sqs.delete_message_batch(QueueUrl=self._url, Entries=entries)
        except (BotoCoreError, ClientError) as exc:
            log.warning("deleting a handled batch failed (it will be received again): %s", exc)

    def _give_back(self, messages: list[dict[str, Any]]) -> None:
        """Shutting down: hand a just-received batch straight back rather than hold it 90 s."""
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, m in enumerate(messages)
        ]
        try:
            self._sqs.change_message_visibility_batch(QueueUrl=self._url, Entries=entries)
        except (BotoCoreError, ClientError):
            pass


class Ticker(threading.Thread):
    def __init__(self, handler: Handler, region: str, interval: float, stopping: threading.Event) -> None:
        super().__init__(name="ticker", daemon=True)
        self._handler = handler
        self._region = region
        self._interval = interval
        self._stopping = stopping

    def run(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                event = scheduled_event(self._region)
                result = self._handler(event, LambdaContext(budget_ms=LAMBDA_TIMEOUT_MS))
                log.debug("tick: %s", result)
            except Exception:
                log.exception("the tick handler failed")
            self._stopping.wait(max(0.0, self._interval - (time.monotonic() - started)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ticker", action="store_true", help="also run the per-minute tick")
    args = parser.parse_args()
    configure_logging()

    from app import app  # the very handlers Lambda runs

    region = os.environ["AWS_REGION"]
    sqs = sqs_client(os.environ, pool=64)

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())

    # Each SQS event source of the app, polled as Lambda would, with the batch size it declares.
    invokers = []
    for source in (s for s in app.event_sources if isinstance(s, SQSEventConfig)):
        queue_url = os.environ[QUEUE_URL_VARIABLES[source.name]]
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]
        arn = attributes["QueueArn"]
        invoker = Invoker(app.handler_map[source.name], int(os.environ.get("LAMBDA_CONCURRENCY", "50")))
        invokers.append(invoker)
        for i in range(int(os.environ.get("SQS_POLLERS", "4"))):
            Poller(f"sqs-poller-{source.name}-{i}", invoker, sqs, queue_url, arn, region, source.batch_size,
                   stopping).start()
    if args.ticker:
        Ticker(app.handler_map["tick"], region, float(os.environ.get("TICK_INTERVAL_SECONDS", "60")),
               stopping).start()
    stopping.wait()
    # Let handlers that are delivering finish; pollers still waiting on a long poll are
    # daemon threads and simply end with us. One cut off mid-call leaves a lease that the
    # next tick reclaims.
    deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
    while any(invoker.busy for invoker in invokers) and time.monotonic() < deadline:
        time.sleep(0.05)


if __name__ == "__main__":
    main()
