"""The AWS side of the local stack: an endpoint (LocalStack, or an embedded moto server) and the queues."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from .ports import wait_for_http
from .processes import Supervisor

# Lambda's timeout is 60 s (.chalice/config.json); a batch a handler is still working on
# must not reappear to another poller before then.
VISIBILITY_TIMEOUT_SECONDS = 90
# A batch whose handler crashed this many times goes to the dead-letter queue.
MAX_RECEIVE_COUNT = 5


# A shared-out fan-out chunk is worth nothing after a few minutes (events are best-effort).
FANOUT_RETENTION_SECONDS = 300


@dataclass(frozen=True)
class Queues:
    dispatch_url: str
    dispatch_arn: str
    dead_letter_url: str
    fanout_url: str


def ensure_endpoint(env: Mapping[str, str], supervisor: Supervisor, log_dir: Path,
                    listener: socket.socket | None) -> str:
    """AWS_ENDPOINT_URL when given (LocalStack, say); else an embedded moto server on `listener`
    (MOTO_PORT, bound by the supervisor)."""
    explicit = env.get("AWS_ENDPOINT_URL", "").strip()
    if explicit:
        return explicit
    assert listener is not None
    port = listener.getsockname()[1]
    supervisor.spawn(
        "moto", [sys.executable, "-m", "emulator.moto_server", str(listener.fileno())],
        env=dict(env),
        output=log_dir / "moto.log",
        pass_fds=[listener.fileno()],
    )
    listener.close()  # the moto server holds it now
    url = f"http://127.0.0.1:{port}"
    if wait_for_http(url + "/moto-api/", 30, supervisor.why_exited) is None:
        raise SystemExit(f"the moto server did not answer on port {port}; see {log_dir / 'moto.log'}")
    return url


def sqs_client(env: Mapping[str, str], pool: int = 10) -> Any:
    return boto3.client(
        "sqs",
        region_name=env["AWS_REGION"],
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=BotoConfig(max_pool_connections=pool, retries={"mode": "standard"}),
    )


def ensure_queues(sqs: Any, name: str, fanout_name: str) -> Queues:
    """The dispatch queue with its dead-letter queue and redrive policy, and the fan-out queue, as
    the deployed stack has them."""
    dlq_url = _create(sqs, f"{name}-dlq", {"MessageRetentionPeriod": "1209600"})
    dlq_arn = _arn(sqs, dlq_url)
    url = _create(
        sqs,
        name,
        {
            "VisibilityTimeout": str(VISIBILITY_TIMEOUT_SECONDS),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
            ),
        },
    )
    fanout_url = _create(sqs, fanout_name, {
        "VisibilityTimeout": str(VISIBILITY_TIMEOUT_SECONDS),
        "MessageRetentionPeriod": str(FANOUT_RETENTION_SECONDS),
    })
    return Queues(url, _arn(sqs, url), dlq_url, fanout_url)


def _create(sqs: Any, name: str, attributes: dict[str, str]) -> str:
    try:
        return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
    except ClientError as exc:
        # A queue kept by a persistent LocalStack with other attributes: use it as it is.
        if "QueueAlreadyExists" not in str(exc) and "QueueNameExists" not in str(exc):
            raise
        return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])


def _arn(sqs: Any, url: str) -> str:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    return str(attrs["QueueArn"])
