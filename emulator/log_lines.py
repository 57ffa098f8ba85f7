"""`make run`'s log lines: one short line per request, delivery, run and tick, for a person.

The app logs structured records (chalicelib/observability.py), written as JSON lines on Lambda
for CloudWatch Logs Insights. A terminal wants them short:

    12:00:01.234 POST /messages 200 3ms
    12:00:05.001 delivered order-42 attempt 1 (late 1ms)
    12:00:05.002 run agent-1/run-9 started attempt 1 (late 4ms)
    12:00:06.000 tick claimed 12 in 4ms

`LOG_FORMAT=json` keeps the JSON lines locally too. The records' fields are the same either way;
a webhook's URL is left out of both (it may carry a secret in its query).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aws_lambda_powertools.logging.formatter import BasePowertoolsFormatter, LambdaPowertoolsFormatter

FORMATS = ("human", "json")


class LogFormatError(ValueError):
    """LOG_FORMAT names no format."""


def log_format(environ: Mapping[str, str] = os.environ) -> str:
    """LOG_FORMAT: `human` (the default) or `json`; LogFormatError naming the choices."""
    chosen = environ.get("LOG_FORMAT", "").strip().lower() or "human"
    if chosen not in FORMATS:
        raise LogFormatError(f"LOG_FORMAT must be human or json, got {environ['LOG_FORMAT']!r}")
    return chosen


def _ms(value: object) -> str:
    return f"{float(str(value)):.0f}ms"


def _late(fields: Mapping[str, Any]) -> str:
    late = fields.get("latenessMs")
    return "" if late is None else f" (late {_ms(late)})"


def _error(fields: Mapping[str, Any]) -> str:
    error = fields.get("error")
    return f": {error}" if error else ""


def _request(f: Mapping[str, Any]) -> str:
    return f"{f.get('method')} {f.get('path')} {f.get('status')} {_ms(f.get('durationMs', 0))}"


def _delivery(f: Mapping[str, Any]) -> str:
    return f"{f.get('outcome')} {f.get('messageId')} attempt {f.get('attempt')}{_late(f)}{_error(f)}"


def _run(f: Mapping[str, Any]) -> str:
    took = f" in {_ms(f['durationMs'])}" if f.get("durationMs") is not None else ""
    return (f"run {f.get('agentId')}/{f.get('runId')} {f.get('outcome')} attempt {f.get('attempt')}"
            f"{took}{_late(f)}{_error(f)}")


# The tick's counts, shown when not zero ("claimed" always).
_TICK_COUNTS = ("reclaimed", "expiredRuns", "sendFailures")


def _tick(f: Mapping[str, Any]) -> str:
    counts = [f"claimed {f.get('claimed', 0)}"]
    counts += [f"{name} {f[name]}" for name in _TICK_COUNTS if f.get(name)]
    handed_on = " (the rest handed on)" if f.get("handedOn") else ""
    return f"tick {', '.join(counts)} in {_ms(f.get('durationMs', 0))}{handed_on}"


_LINES: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "request": _request, "delivery": _delivery, "run": _run, "tick": _tick,
}


class HumanFormatter(BasePowertoolsFormatter):
    """A record as one short line: its time of day, then what happened."""

    def format(self, record: logging.LogRecord) -> str:
        at = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        fields = record.__dict__
        line = _LINES.get(str(fields.get("kind")))
        text = line(fields) if line else f"{record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return f"{at} {text}"

    # Powertools' keys are for JSON lines; a short line has none to keep.
    def append_keys(self, **additional_keys: Any) -> None:
        pass

    def remove_keys(self, keys: Iterable[str]) -> None:
        pass

    def clear_state(self) -> None:
        pass


def formatter(environ: Mapping[str, str] = os.environ) -> logging.Formatter:
    """The formatter LOG_FORMAT asks for."""
    if log_format(environ) == "json":
        return LambdaPowertoolsFormatter()
    return HumanFormatter()


def use_local_format(environ: Mapping[str, str] = os.environ) -> None:
    """In a process that runs the app's handlers: its lines in LOG_FORMAT (JSON is already theirs)."""
    if log_format(environ) == "human":
        from chalicelib import observability

        observability.use_formatter(HumanFormatter())
