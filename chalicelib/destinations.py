"""Destinations: what a call says of its endpoint's health, the circuit breaker's settings, and
the view of each destination that `GET /destinations` gives.

A destination is a URL's scheme, host and port (targets.destination). Its breaker opens after a
streak of failed calls, so that its deliveries spend their retries without a call while it is
down; one probe after a cool-down closes it again, or opens it for twice as long. The counting
is in lua/flow.lua, inside the scripts that begin and finish a delivery.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from .timeutil import format_instant

if TYPE_CHECKING:  # config.py reads BreakerPolicy from here: it need not load the HTTP client
    from .sender import DeliveryResult


class Health(StrEnum):
    """What one call says of its destination."""

    OK = "ok"  # it answered, whatever it answered (a 4xx is the caller's problem, not its)
    FAIL = "fail"  # no connection, no answer in time, or a 5xx
    LIMITED = "limited"  # a 429: it is up, and asks for fewer calls (counted, breaker untouched)
    NONE = ""  # nothing: no call was made (refused target, open breaker)


def health_of(result: DeliveryResult) -> Health:
    if result.refused:
        return Health.NONE
    code = result.status_code
    if code is None or code >= 500 or code == 408:
        return Health.FAIL
    return Health.LIMITED if code == 429 else Health.OK


@dataclass(frozen=True)
class BreakerPolicy:
    failures: int  # failed calls in a row that open it; 0: never
    cooldown_ms: int  # the first opening's wait before a probe
    max_cooldown_ms: int  # each opening after a failed probe waits twice as long, up to this


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"  # its cool-down is over: the next call is its probe


_MINUTE_COUNT = re.compile(r"^[cf]\d+$")  # a breaker's calls or failures in one minute (flow.lua)


@dataclass(frozen=True)
class Destination:
    """One destination as GET /destinations shows it."""

    destination: str
    breaker: Mapping[str, str]  # its breaker hash (keys.py)
    in_flight: int
    waiting: int
    paused_until_ms: int | None
    last_active_minute_ms: int  # the start of the latest minute it was called in

    def plus(self, other: Destination) -> Destination:
        """The same destination as another shard counts it (shards.py): each shard has its own
        breaker and calls. Counts add up; the breaker shows the shard that is worst off."""
        breaker: dict[str, str] = {}
        for field in {*self.breaker, *other.breaker}:
            mine, theirs = self.breaker.get(field), other.breaker.get(field)
            if mine is None or theirs is None:
                breaker[field] = mine if theirs is None else theirs
            elif _MINUTE_COUNT.match(field):
                breaker[field] = str(int(mine) + int(theirs))
            else:
                breaker[field] = max(mine, theirs, key=lambda value: int(value) if value.isdigit() else 0)
        pauses = [ms for ms in (self.paused_until_ms, other.paused_until_ms) if ms]
        return Destination(self.destination, breaker, self.in_flight + other.in_flight,
                           self.waiting + other.waiting, max(pauses) if pauses else None,
                           max(self.last_active_minute_ms, other.last_active_minute_ms))

    def state(self, now_ms: int) -> BreakerState:
        open_until = int(self.breaker.get("openUntil") or 0)
        if not open_until:
            return BreakerState.CLOSED
        return BreakerState.OPEN if open_until > now_ms else BreakerState.HALF_OPEN

    def to_dict(self, now_ms: int) -> dict[str, Any]:
        b = self.breaker
        minute = now_ms // 60_000
        # The calls of this minute and the one before (flow.lua counts them per minute).
        calls = sum(int(b.get(f"c{m}") or 0) for m in (minute - 1, minute))
        failures = sum(int(b.get(f"f{m}") or 0) for m in (minute - 1, minute))
        open_until = int(b.get("openUntil") or 0)
        paused = self.paused_until_ms if self.paused_until_ms and self.paused_until_ms > now_ms else None
        return {
            "destination": self.destination,
            "state": self.state(now_ms).value,
            "inFlight": self.in_flight,
            "waiting": self.waiting,
            "consecutiveFailures": int(b.get("streak") or 0),
            "openUntil": format_instant(open_until) if open_until else None,
            "pausedUntil": format_instant(paused) if paused else None,
            "recentCalls": calls,
            "recentFailures": failures,
            "recentFailureRate": round(failures / calls, 3) if calls else 0.0,
            "lastActiveMinute": format_instant(self.last_active_minute_ms),
        }
