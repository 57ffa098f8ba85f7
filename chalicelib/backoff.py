"""Retry timing: pure functions of their inputs."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parsedate_to_datetime


def backoff_seconds(retry_number: int, base_seconds: int, cap_seconds: int) -> int:
    """Delay before retry `retry_number` (1-based): base, 2*base, 4*base … capped."""
    if retry_number < 1:
        raise ValueError("retry_number starts at 1")
    return min(cap_seconds, base_seconds * 2 ** min(retry_number - 1, 32))


def parse_retry_after(value: str | None, now_ms: int) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - now_ms / 1000)


def retry_delay_seconds(
    retry_number: int, base_seconds: int, cap_seconds: int, retry_after: float | None
) -> float:
    """The backoff, or what the receiver's Retry-After asked for if longer, within the cap."""
    delay = float(backoff_seconds(retry_number, base_seconds, cap_seconds))
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, float(cap_seconds))


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long apart a failed attempt is tried again (webhooks and agent runs
    each have one)."""

    max_retries: int
    base_seconds: int
    max_delay_seconds: int

    def delay_seconds(self, retry_number: int, retry_after: float | None = None) -> float:
        return retry_delay_seconds(retry_number, self.base_seconds, self.max_delay_seconds, retry_after)
