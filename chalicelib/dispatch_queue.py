"""The SQS dispatch queue: items are sent with DelaySeconds so they arrive just before due."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .claims import Claimed
from .clock import Clock
from .errors import Unavailable
from .store import Store

log = logging.getLogger(__name__)

MAX_DELAY_SECONDS = 900  # SQS's own limit
_BATCH = 10  # SQS's own limit for SendMessageBatch
# Items due in the same second travel in one SQS message, up to this many: a burst of thousands
# then costs SQS and the dispatchers a few hundred calls instead of several per item. Small enough
# that one dispatcher delivers a group in one round (see dispatcher.DELIVERY_THREADS), and far
# under SQS's 256 KB body limit (an item is at most ~330 bytes).
GROUP_SIZE = 50


def delay_seconds(due_ms: int, now_ms: int, lead_seconds: int) -> int:
    """Whole seconds to hold a message so it becomes visible `lead_seconds` before due."""
    wait = (due_ms - now_ms) // 1000 - lead_seconds
    return max(0, min(MAX_DELAY_SECONDS, wait))


class DispatchQueue:
    def __init__(
        self, sqs: Any, queue_name: str, queue_url: str | None, clock: Clock, lead_seconds: int
    ) -> None:
        self._sqs = sqs
        self._queue_name = queue_name
        self._queue_url = queue_url
        self._clock = clock
        self._lead = lead_seconds

    @property
    def url(self) -> str:
        if self._queue_url is None:
            try:
                self._queue_url = self._sqs.get_queue_url(QueueName=self._queue_name)["QueueUrl"]
            except (BotoCoreError, ClientError) as exc:
                # The text names the endpoint: logged, not answered.
                log.warning("dispatch queue %r is unavailable: %s", self._queue_name, exc)
                raise Unavailable("the dispatch queue is unavailable") from None
        return self._queue_url

    def reachable(self) -> bool:
        try:
            self._sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])
            return True
        except (BotoCoreError, ClientError, Unavailable) as exc:
            log.warning("the dispatch queue is unreachable: %s", exc)
            return False

    def send(self, items: Iterable[Claimed]) -> list[Claimed]:
        """Send items, those due in the same second grouped into one SQS message; return
        those SQS did not take (the tick's reclaim recovers them)."""
        batches: list[list[list[Claimed]]] = []
        for group in groups(items):
            if not batches or len(batches[-1]) == _BATCH:
                batches.append([])
            batches[-1].append(group)
        if len(batches) <= 1:
            return [x for batch in batches for x in self._send_batch(batch)]
        with ThreadPoolExecutor(max_workers=min(8, len(batches))) as pool:
            return [x for failed in pool.map(self._send_batch, batches) for x in failed]

    def send_control(self, kind: str, due_ms: int = 0, shard: str = "") -> bool:
        """Ask a dispatcher to do a piece of the scheduler's own work (`tick`, `status`, the
        `sweep` of one shard's second) at `due_ms`."""
        body = json.dumps({"kind": kind, "due": due_ms, **({"shard": shard} if shard else {})})
        delay = delay_seconds(due_ms, self._clock.now_ms(), self._lead) if due_ms else 0
        try:
            self._sqs.send_message(QueueUrl=self.url, MessageBody=body, DelaySeconds=delay)
            return True
        except (BotoCoreError, ClientError, Unavailable) as exc:
            log.warning("sending %s to the dispatch queue failed: %s", kind, exc)
            return False

    def send_now(self, bodies: list[str]) -> list[int]:
        """Send control bodies to be taken at once; the indexes of those SQS did not take."""
        failed: list[int] = []
        for first in range(0, len(bodies), _BATCH):
            entries = [{"Id": str(first + i), "MessageBody": body}
                       for i, body in enumerate(bodies[first:first + _BATCH])]
            try:
                response = self._sqs.send_message_batch(QueueUrl=self.url, Entries=entries)
            except (BotoCoreError, ClientError, Unavailable) as exc:
                log.warning("sending %d message(s) to SQS failed: %s", len(entries), exc)
                failed += [int(entry["Id"]) for entry in entries]
                continue
            failed += [int(entry["Id"]) for entry in response.get("Failed", [])]
        return failed

    def _send_batch(self, batch: list[list[Claimed]]) -> list[Claimed]:
        now = self._clock.now_ms()
        entries = [
            {
                "Id": str(i),
                "MessageBody": group_body(group),
                "DelaySeconds": delay_seconds(group[0].due_ms, now, self._lead),
            }
            for i, group in enumerate(batch)
        ]
        try:
            if len(entries) == 1:
                self._sqs.send_message(
                    QueueUrl=self.url,
                    MessageBody=entries[0]["MessageBody"],
                    DelaySeconds=entries[0]["DelaySeconds"],
                )
                return []
            response = self._sqs.send_message_batch(QueueUrl=self.url, Entries=entries)
        except (BotoCoreError, ClientError, Unavailable) as exc:
            log.warning("sending %d message(s) to SQS failed: %s", len(batch), exc)
            return [item for group in batch for item in group]
        return [item for entry in response.get("Failed", []) for item in batch[int(entry["Id"])]]


class Handoff:
    """Hands claimed items to the dispatch queue. What SQS refuses is already claimed and in the
    inflight index: it is made due for reclaiming now, so the next tick takes it up at once rather
    than after the queue grace."""

    def __init__(self, queue: DispatchQueue, store: Store, clock: Clock) -> None:
        self._queue = queue
        self._store = store
        self._clock = clock

    def send(self, items: list[Claimed]) -> int:
        """Send `items`; returns how many SQS refused."""
        failed = self._queue.send(items)
        if failed:
            log.warning("%d item(s) not sent to SQS; the next tick takes them up", len(failed))
            self._store.expedite(failed, self._clock.now_ms())
        return len(failed)


def groups(items: Iterable[Claimed]) -> list[list[Claimed]]:
    """Items in due order, cut wherever the due second changes or a group is full."""
    out: list[list[Claimed]] = []
    for item in sorted(items, key=lambda x: x.due_ms):
        last = out[-1] if out else None
        if last and len(last) < GROUP_SIZE and last[0].due_ms // 1000 == item.due_ms // 1000:
            last.append(item)
        else:
            out.append([item])
    return out


def group_body(group: list[Claimed]) -> str:
    """One item travels as itself; several as a group the dispatcher splits again."""
    if len(group) == 1:
        return group[0].to_body()
    return json.dumps({"kind": "group", "items": [item.to_row() for item in group]})
