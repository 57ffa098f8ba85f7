"""What a handler needs from the Lambda context."""

from __future__ import annotations

from typing import Any

from .clock import Clock

# Stop claiming this long before the Lambda's timeout (at most a fifth of the
# budget), to leave time to hand the rest on.
SAFETY_MARGIN_MS = 10_000
# Without a context (a local call), act as a one-minute Lambda.
DEFAULT_BUDGET_MS = 60_000


def deadline_from(context: Any, clock: Clock) -> int:
    """The clock time by which a handler should stop starting new work."""
    remaining = DEFAULT_BUDGET_MS
    getter = getattr(context, "get_remaining_time_in_millis", None)
    if callable(getter):
        remaining = int(getter())
    return clock.now_ms() + max(0, remaining - min(SAFETY_MARGIN_MS, remaining // 5))
