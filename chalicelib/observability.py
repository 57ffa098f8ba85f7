"""Structured logs and CloudWatch metrics: one JSON line per request, tick, delivery and run.

Powertools for AWS Lambda does the formats: its Logger writes JSON lines (CloudWatch Logs
Insights queries them by field), its Metrics writes CloudWatch embedded-metric-format blobs,
which CloudWatch turns into metrics with no API call from the function. Lines carry ids,
outcomes, attempts and timings; never tokens, headers or payload bodies.
`POWERTOOLS_METRICS_DISABLED=true` silences the metrics (`POWERTOOLS_LOG_LEVEL` sets the level).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit

SERVICE = "punctual"
NAMESPACE = "Punctual"
# Free text that reaches a log line (an agent's own error report) is cut to this.
MAX_ERROR_CHARS = 300

logger = Logger(service=SERVICE)
# The modules' own loggers (`chalicelib.*`) write through the same JSON handler.
logging.getLogger("chalicelib")
copy_config_to_registered_loggers(source_logger=logger, include={"chalicelib"})


def use_formatter(formatter: logging.Formatter) -> None:
    """Write the lines with `formatter` instead of as JSON, in this process (a host that shows them
    to a person; the records and their fields stay the same). The `chalicelib` loggers share the
    handler."""
    for handler in logger.handlers:
        handler.setFormatter(formatter)


_metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
# One dispatch invocation delivers its batch on dozens of threads, and the local stack runs
# many invocations in one process, but Powertools' metric set is a plain dict. Values wait in a
# deque (its append is atomic) and go into the set when the invocation flushes: a lock taken
# for every value made the threads of a burst queue behind each other for the interpreter lock.
_values: deque[tuple[str, float, str]] = deque()
_flush_lock = threading.Lock()


def _count(name: str, value: float = 1, unit: str = MetricUnit.Count) -> None:
    _values.append((name, value, unit))


def flush_metrics() -> None:
    """Write what this invocation counted (called when every handler returns)."""
    with _flush_lock:
        while _values:
            name, value, unit = _values.popleft()
            _metrics.add_metric(name=name, unit=unit, value=value)
        if _metrics.metric_set:
            _metrics.flush_metrics()


def _cut(error: str | None) -> str | None:
    return error if error is None or len(error) <= MAX_ERROR_CHARS else error[:MAX_ERROR_CHARS] + "…"


# -- the four kinds of line -------------------------------------------------------------


def request(
    method: str, path: str, route: str, status: int, duration_ms: float, request_id: str | None
) -> None:
    logger.info(
        "request",
        extra={"kind": "request", "method": method, "path": path, "route": route, "status": status,
               "durationMs": round(duration_ms, 1), "requestId": request_id},
    )


def tick(report: dict[str, object], duration_ms: float) -> None:
    logger.info("tick", extra={"kind": "tick", **report, "durationMs": round(duration_ms, 1)})
    _count("TickDuration", round(duration_ms, 1), MetricUnit.Milliseconds)
    _count("TickClaimed", int(str(report.get("claimed", 0))))


_DELIVERY_METRICS = {"delivered": "WebhookDeliveries", "failed": "WebhookFailures", "retry": "WebhookRetries"}


def _at_level(outcome: str) -> Callable[..., None]:
    """A final failure is a WARNING, so that LOG_LEVEL=WARNING still shows every webhook and run
    given up on; a retry is INFO (another attempt follows)."""
    return logger.warning if outcome == "failed" else logger.info


def delivery(
    message_id: str, outcome: str, attempt: int, lateness_ms: int | None, error: str | None
) -> None:
    """One webhook delivery attempt: `delivered`, `retry` (another attempt follows) or `failed`.
    An attempt its destination's open circuit breaker spent without a call has no lateness."""
    _at_level(outcome)(
        "delivery",
        extra={"kind": "delivery", "messageId": message_id, "outcome": outcome, "attempt": attempt,
               "latenessMs": lateness_ms, "error": _cut(error)},
    )
    _count(_DELIVERY_METRICS[outcome])
    if lateness_ms is not None:
        _count("WebhookLateness", lateness_ms, MetricUnit.Milliseconds)


_RUN_METRICS = {
    "started": "AgentRunsStarted",
    "completed": "AgentRunsCompleted",
    "retry": "AgentRunRetries",
    "failed": "AgentRunFailures",
    "skipped": "AgentRunsSkipped",
}


def run(
    agent_id: str,
    run_id: str,
    outcome: str,
    attempt: int,
    lateness_ms: int | None,
    duration_ms: int | None = None,
    error: str | None = None,
) -> None:
    """One agent run attempt: `started`, then `completed`, `retry` or `failed`; or `skipped`."""
    _at_level(outcome)(
        "run",
        extra={"kind": "run", "agentId": agent_id, "runId": run_id, "outcome": outcome,
               "attempt": attempt, "latenessMs": lateness_ms, "durationMs": duration_ms,
               "error": _cut(error)},
    )
    _count(_RUN_METRICS[outcome])
    if outcome == "started" and lateness_ms is not None:
        _count("AgentStartLateness", lateness_ms, MetricUnit.Milliseconds)


# -- handler plumbing ---------------------------------------------------------------------


def logged_request(event: Any, get_response: Callable[[Any], Any]) -> Any:
    """Chalice HTTP middleware: one line per request, after it is answered."""
    started = time.perf_counter()
    response = get_response(event)
    context = event.context or {}
    request(
        event.method,
        # API Gateway's event has the path as requested; Chalice's local gateway sets only
        # requestContext.path (on AWS that one carries the stage prefix too).
        event.to_original_event().get("path") or context.get("path") or event.path,
        event.path,  # Chalice's path is the route (`/messages/{message_id}`), to group by
        response.status_code,
        (time.perf_counter() - started) * 1000,
        context.get("requestId"),
    )
    return response


@contextmanager
def invocation() -> Iterator[None]:
    """Around every Lambda invocation: metrics are written even when the handler raises."""
    try:
        yield
    finally:
        flush_metrics()
