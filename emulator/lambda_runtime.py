"""What AWS hands a Lambda handler: the context object and the event shapes, built locally.

The local stack invokes the app's own handlers (`app.handler_map[...]`) with these, so the
code path is the one Lambda runs.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import UTC, datetime
from typing import Any

ACCOUNT = "000000000000"


class LambdaContext:
    """The part of Lambda's context object the handlers read."""

    def __init__(self, function_name: str = "punctual", budget_ms: int = 60_000) -> None:
        self._deadline = time.monotonic() + budget_ms / 1000
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = function_name
        self.memory_limit_in_mb = 512

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def scheduled_event(region: str, rule: str = "punctual-tick") -> dict[str, Any]:
    """An EventBridge `rate(1 minute)` event, as the tick rule delivers it."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{ACCOUNT}:rule/{rule}"],
        "detail": {},
    }


def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """The event Lambda's SQS event source builds from a ReceiveMessage batch."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m.get("MD5OfBody") or hashlib.md5(m["Body"].encode()).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }

