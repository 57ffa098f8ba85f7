"""Cron maths: pure functions of (expression, time zone, instant). No clock.

Slots are wall-clock times in the schedule's zone. Across daylight-saving
changes, as in Vixie/ISC cron: a slot that falls in the spring-forward gap runs
at the first instant after the gap; in the repeated autumn hour a fixed-hour
slot (`30 1 * * *`) runs on its first occurrence only, while a schedule that
runs every hour (hour field `*`: `*/5 * * * *`, `@hourly`) keeps running in
both occurrences, so it never goes an hour of real time without a run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from .errors import BadRequest

_MAX_STEPS = 2000  # enough for a minutely schedule across a repeated hour


def check_expression(expression: object) -> str:
    """Return a 5-field (or @-macro) cron expression, or raise BadRequest saying why not."""
    if not isinstance(expression, str) or not expression.strip():
        raise BadRequest("cronExpression is required and must be a string such as '*/5 * * * *'")
    text = " ".join(expression.split())
    if not text.startswith("@") and len(text.split(" ")) != 5:
        raise BadRequest(
            f"cronExpression must have 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(text.split(' '))}: {expression!r}"
        )
    try:
        croniter(text, datetime(2000, 1, 1))
    except (CroniterError, ValueError, KeyError) as exc:
        raise BadRequest(f"cronExpression {expression!r} is not valid: {exc}") from None
    return text


def zone(name: object, field: str = "timezone") -> ZoneInfo:
    if not isinstance(name, str) or not name.strip():
        raise BadRequest(f"{field} must be an IANA time zone name such as 'America/New_York'")
    try:
        return ZoneInfo(name.strip())
    # OSError: a folder of the zone database ('America', 'Etc') is opened as a file and fails.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise BadRequest(f"{field} {name!r} is not a known IANA time zone") from None


def _wall_to_utc_ms(wall: datetime, tz: ZoneInfo) -> int:
    # fold=0 takes the first occurrence of a repeated time; for a time in the
    # gap it applies the offset from before the change, which lands just after it.
    aware = wall.replace(tzinfo=tz, fold=0)
    return int(aware.astimezone(UTC).timestamp() * 1000)


def _repeat_ms(wall: datetime, tz: ZoneInfo) -> int:
    """How much later a wall-clock time occurs a second time (0 when it occurs once)."""
    first, second = (wall.replace(tzinfo=tz, fold=fold).utcoffset() for fold in (0, 1))
    if first is None or second is None or second >= first:
        return 0  # unambiguous, or in a spring-forward gap
    return int((first - second).total_seconds() * 1000)


# Pure, and costly next to everything else a slot's firing does (croniter parses the expression
# each time): the agents of one schedule and minute share one answer.
@lru_cache(maxsize=4096)
def next_after(expression: str, tz: ZoneInfo, after_ms: int) -> int:
    """The first slot strictly after `after_ms` (epoch ms), as epoch ms."""
    after_wall = datetime.fromtimestamp(after_ms / 1000, tz).replace(tzinfo=None)
    every_hour = croniter(expression).expanded[1] == ["*"]
    # Start a minute back so a slot mapped forward out of a gap is not missed, and, inside a
    # repeated hour, a repeat back so its second occurrences are seen.
    back = timedelta(minutes=1, milliseconds=_repeat_ms(after_wall, tz) if every_hour else 0)
    it = croniter(expression, after_wall - back)
    best: int | None = None
    try:
        for _ in range(_MAX_STEPS):
            wall = it.get_next(datetime)
            first = _wall_to_utc_ms(wall, tz)
            if first > after_ms:
                return first if best is None else min(best, first)
            repeat = _repeat_ms(wall, tz) if every_hour else 0
            if repeat:
                second = first + repeat
                if second > after_ms:
                    best = second if best is None else min(best, second)
    except CroniterBadDateError:
        pass
    if best is not None:
        return best
    raise BadRequest(f"cronExpression {expression!r} never fires")
