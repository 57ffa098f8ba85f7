"""The SQS dispatch queue: items are sent with DelaySeconds so they arrive just before due."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .clock import Clock
from .errors import Unavailable
from .store import Claimed

log = logging.getLogger(__name__)

MAX_DELAY_SECONDS = 900  # SQS's own limit
_BATCH = 10  # SQS's own limit for SendMessageBatch


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
                raise Unavailable(f"dispatch queue {self._queue_name!r} is unavailable: {exc}") from None
        return self._queue_url

    def reachable(self) -> bool:
        try:
            self._sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])
            return True
        except (BotoCoreError, ClientError, Unavailable) as exc:
            log.warning("the dispatch queue is unreachable: %s", exc)
            return False

    def send(self, items: Iterable[Claimed]) -> list[Claimed]:
        """Send items; return those SQS did not take (the tick's reclaim recovers them)."""
        batches: list[list[Claimed]] = []
        for item in items:
            if not batches or len(batches[-1]) == _BATCH:
                batches.append([])
            batches[-1].append(item)
        if len(batches) <= 1:
            return [x for batch in batches for x in self._send_batch(batch)]
        with ThreadPoolExecutor(max_workers=min(8, len(batches))) as pool:
            return [x for failed in pool.map(self._send_batch, batches) for x in failed]

    def send_control(self, kind: str, due_ms: int = 0) -> bool:
        """Ask a dispatcher to do a piece of the scheduler's own work (`tick`, `status`) at `due_ms`."""
        body = json.dumps({"kind": kind, "due": due_ms})
        delay = delay_seconds(due_ms, self._clock.now_ms(), self._lead) if due_ms else 0
        try:
            self._sqs.send_message(QueueUrl=self.url, MessageBody=body, DelaySeconds=delay)
            return True
        except (BotoCoreError, ClientError, Unavailable) as exc:
            log.warning("sending %s to the dispatch queue failed: %s", kind, exc)
            return False

    def _send_batch(self, batch: list[Claimed]) -> list[Claimed]:
        now = self._clock.now_ms()
        entries = [
            {
                "Id": str(i),
                "MessageBody": item.to_body(),
                "DelaySeconds": delay_seconds(item.due_ms, now, self._lead),
            }
            for i, item in enumerate(batch)
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
            log.warning("sending %d item(s) to SQS failed: %s", len(batch), exc)
            return list(batch)
        return [batch[int(entry["Id"])] for entry in response.get("Failed", [])]
