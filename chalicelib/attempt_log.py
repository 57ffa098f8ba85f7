"""The attempt log: a message's or a run's last tries, kept in its own hash (field `attemptLog`).

Each entry is one line. The script that records an attempt's outcome writes the log in the same
HSET as the outcome (the caller read the log with the claim, and only the claim's holder writes
it), so logging costs no round trip, no extra command, and lives exactly as long as the hash; a
replay appends its line in Lua (lua/attempt_log.lua). The last ATTEMPT_LOG_SIZE lines are kept.
A line is `attempt|kind|startedMs|status|latencyMs|nextRetryMs|error`, each empty where there is
nothing: a first try delivered is about 30 bytes, which keeps a small message hash in Redis's
compact encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .timeutil import format_instant

ATTEMPT_LOG_SIZE = 20
ERROR_CHARS = 300  # an entry's error, as kept (the hash's `lastError` keeps it whole)


class AttemptKind(StrEnum):
    DELIVERY = "delivery"  # a call was made (a webhook POST, an agent call)
    BREAKER_OPEN = "breaker-open"  # spent without a call: the destination's breaker was open
    REPLAY = "replay"  # a replay was asked for (POST /messages/{id}/replay)


_CODES = {AttemptKind.DELIVERY: "d", AttemptKind.BREAKER_OPEN: "b", AttemptKind.REPLAY: "r"}
_KINDS = {code: kind for kind, code in _CODES.items()}


def _number(text: str) -> int | None:
    return int(text) if text else None


def _text(value: int | None) -> str:
    return "" if value is None else str(value)


@dataclass(frozen=True)
class Attempt:
    attempt: int  # 1-based within its round; a replay starts a new round and is logged as 0
    kind: AttemptKind
    started_ms: int
    status: int | None = None  # the HTTP status answered, if any
    error: str | None = None
    latency_ms: int | None = None
    next_retry_ms: int | None = None

    def encode(self) -> str:
        error = " ".join((self.error or "")[:ERROR_CHARS].splitlines())
        return "|".join((str(self.attempt), _CODES[self.kind], str(self.started_ms), _text(self.status),
                         _text(self.latency_ms), _text(self.next_retry_ms), error))

    @classmethod
    def decode(cls, line: str) -> Attempt:
        attempt, kind, started, status, latency, next_retry, error = line.split("|", 6)
        return cls(attempt=int(attempt), kind=_KINDS[kind], started_ms=int(started), status=_number(status),
                   error=error or None, latency_ms=_number(latency), next_retry_ms=_number(next_retry))

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "startedAt": format_instant(self.started_ms),
            "status": self.status,
            "error": self.error,
            "latencyMs": self.latency_ms,
            "nextRetryAt": format_instant(self.next_retry_ms),
            "kind": self.kind.value,
        }


def encode_log(attempts: tuple[Attempt, ...]) -> str:
    """The stored form of a log: its last ATTEMPT_LOG_SIZE entries."""
    return "\n".join(attempt.encode() for attempt in attempts[-ATTEMPT_LOG_SIZE:])


def decode_log(text: str | None) -> tuple[Attempt, ...]:
    """The entries of a stored log, oldest first."""
    return tuple(Attempt.decode(line) for line in text.split("\n")) if text else ()
