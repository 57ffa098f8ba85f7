"""The local event sources: an EventBridge-like ticker and Lambda's SQS pollers.

Run as `python -m emulator.workers --concurrency N --held-dir DIR [--ticker]`. For each SQS handler
of the app (`dispatch` on the dispatch queue, `fanout` on the fan-out queue), SQS_POLLERS threads
long-poll its queue and invoke the handler with the SQS event Lambda would build, in batches of
the size the handler declares, each invocation in a container of its own (emulator/containers.py),
up to N at once; a batch is deleted only when the handler returns, as Lambda's event source
mapping does. What the invocations hold is written down in DIR (emulator/held.py), and what dead
worker processes held there is handed back to SQS. The ticker invokes `tick` with a scheduled
event at start and then every TICK_INTERVAL_SECONDS.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from chalice.app import SQSEventConfig

from chalicelib.threads import ContainerPools

from .aws_local import sqs_client
from .containers import LAMBDA_TIMEOUT_MS, Function, Handler
from .held import HeldLog, release_orphans
from .lambda_runtime import LambdaContext, scheduled_event, sqs_event
from .log_lines import use_local_format
from .processes import configure_logging

log = logging.getLogger("punctual.workers")

# The queue each SQS handler of the app consumes (emulator/stack.py creates them).
QUEUE_URL_VARIABLES = {"dispatch": "DISPATCH_QUEUE_URL", "fanout": "FANOUT_QUEUE_URL"}
POLL_WAIT_SECONDS = 20
SHUTDOWN_GRACE_SECONDS = 20
# How often a worker process looks for what dead ones held (a new one also looks as it starts).
SWEEP_SECONDS = 5.0


class Poller(threading.Thread):
    """One of the event source mapping's pollers: long-polls, and hands each batch to a Lambda.

    A few pollers feed many invocations, as on AWS; every long poll waiting on moto is woken
    by every send, so pollers are kept few.
    """

    def __init__(self, name: str, function: Function, sqs: Any, queue_url: str, queue_arn: str,
                 region: str, batch_size: int, held: HeldLog, stopping: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self._function = function
        self._sqs = sqs
        self._url = queue_url
        self._arn = queue_arn
        self._region = region
        self._batch_size = batch_size
        self._held = held
        self._stopping = stopping

    def run(self) -> None:
        while self._function.reserve(self._stopping):
            messages = self._receive()
            if not messages:
                self._function.release()
            elif self._stopping.is_set():
                self._give_back(messages)
                self._function.release()
            else:
                self._held.hold(self._url, (m["ReceiptHandle"] for m in messages))
                event = sqs_event(messages, self._arn, self._region)
                self._function.invoke(event, lambda ok, batch=messages: self._finished(batch, ok))

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

    def _finished(self, messages: list[dict[str, Any]], ok: bool) -> None:
        if ok:
            self._acknowledge(messages)
        # A failed batch comes back after its visibility timeout, as on Lambda.
        self._held.let_go(m["ReceiptHandle"] for m in messages)

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
    """EventBridge's schedule: the tick function, in a container of its own."""

    def __init__(self, handler: Handler, region: str, interval: float, stopping: threading.Event) -> None:
        super().__init__(name="ticker", daemon=True)
        self._handler = handler
        self._region = region
        self._interval = interval
        self._stopping = stopping

    def run(self) -> None:
        ContainerPools().enter()
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                event = scheduled_event(self._region)
                result = self._handler(event, LambdaContext(budget_ms=LAMBDA_TIMEOUT_MS))
                log.debug("tick: %s", result)
            except Exception:
                log.exception("the tick handler failed")
            self._stopping.wait(max(0.0, self._interval - (time.monotonic() - started)))


class Sweeper(threading.Thread):
    """Hands back to SQS what dead worker processes held, every SWEEP_SECONDS."""

    def __init__(self, directory: Path, sqs: Any, stopping: threading.Event) -> None:
        super().__init__(name="held-sweeper", daemon=True)
        self._directory = directory
        self._sqs = sqs
        self._stopping = stopping

    def sweep(self) -> None:
        try:
            released = release_orphans(self._directory, self._sqs)
        except OSError as exc:
            log.warning("could not look for what dead worker processes held: %s", exc)
            return
        if released:
            log.warning("handed back %d SQS message(s) a dead worker process held", released)

    def run(self) -> None:
        while not self._stopping.wait(SWEEP_SECONDS):
            self.sweep()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ticker", action="store_true", help="also run the per-minute tick")
    parser.add_argument("--concurrency", type=int, default=50,
                        help="invocations of each SQS function at once in this process")
    parser.add_argument("--held-dir", type=Path, required=True,
                        help="where worker processes write down what they hold")
    args = parser.parse_args()
    configure_logging()
    use_local_format()

    from app import app  # the very handlers Lambda runs

    region = os.environ["AWS_REGION"]
    sqs = sqs_client(os.environ, pool=64)

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())

    sweeper = Sweeper(args.held_dir, sqs, stopping)
    sweeper.sweep()  # what the process this one replaces held comes back now, not in 90 s
    held = HeldLog(args.held_dir)
    sweeper.start()

    # Each SQS event source of the app, polled as Lambda would, with the batch size it declares.
    functions = []
    for source in (s for s in app.event_sources if isinstance(s, SQSEventConfig)):
        queue_url = os.environ[QUEUE_URL_VARIABLES[source.name]]
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]
        arn = attributes["QueueArn"]
        function = Function(source.name, app.handler_map[source.name], max(1, args.concurrency))
        functions.append(function)
        for i in range(int(os.environ.get("SQS_POLLERS", "4"))):
            Poller(f"sqs-poller-{source.name}-{i}", function, sqs, queue_url, arn, region, source.batch_size,
                   held, stopping).start()
    if args.ticker:
        Ticker(app.handler_map["tick"], region, float(os.environ.get("TICK_INTERVAL_SECONDS", "60")),
               stopping).start()
    stopping.wait()
    # Let handlers that are delivering finish; pollers still waiting on a long poll are
    # daemon threads and simply end with us. One cut off mid-call leaves a lease that the
    # next tick reclaims.
    deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
    while any(function.busy for function in functions) and time.monotonic() < deadline:
        time.sleep(0.05)
    held.close()


if __name__ == "__main__":
    main()
