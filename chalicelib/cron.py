"""Cron maths: pure functions of (expression, time zone, instant). No clock.

Slots are wall-clock times in the schedule's zone. Across daylight-saving
changes, as in Vixie/ISC cron: a slot that falls in the spring-forward gap runs
at the first instant after the gap; in the repeated autumn hour a fixed-hour
slot (`30 1 * * *`) runs on its first occurrence only, while a schedule that
runs every hour (hour field `*`: `*/5 * * * *`, `@hourly`) keeps running in
both occurrences, so it never goes an hour of real time without a run.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from .errors import BadRequest

_MAX_STEPS = 2000  # enough for a minutely schedule across a repeated hour
_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
# croniter's own extensions, R (random) and H (hashed), bare or with a range or step. No month
# or weekday name starts with R or H, so a letter after one means a name, not an extension.
_DRAWN = re.compile(r"^([rh])(?![a-z])", re.IGNORECASE)
_DRAWN_KIND = {"r": "random ('R')", "h": "hashed ('H')"}


def check_expression(expression: object) -> str:
    """Return a 5-field (or @-macro) cron expression, or raise BadRequest saying why not."""
    if not isinstance(expression, str) or not expression.strip():
        raise BadRequest("cronExpression is required and must be a string such as '*/5 * * * *'")
    text = " ".join(expression.split())
    if not text.startswith("@"):
        fields = text.split(" ")
        if len(fields) != 5:
            raise BadRequest(
                f"cronExpression must have 5 fields (minute hour day-of-month month day-of-week), "
                f"got {len(fields)}: {expression!r}"
            )
        _refuse_drawn_fields(fields, expression)
    try:
        croniter(text, datetime(2000, 1, 1))
    except (CroniterError, ValueError, KeyError) as exc:
        raise BadRequest(f"cronExpression {expression!r} is not valid: {exc}") from None
    return text


def _refuse_drawn_fields(fields: list[str], expression: str) -> None:
    # croniter draws an R field afresh each time it parses the expression, and next_after parses
    # it for every slot: the schedule would fire at random, sometimes twice an hour. An H field
    # needs an id to hash that we do not give croniter, which refuses it with a puzzling message.
    for name, field in zip(_FIELDS, fields, strict=True):
        for term in field.split(","):
            if drawn := _DRAWN.match(term):
                raise BadRequest(
                    f"cronExpression {expression!r}: {_DRAWN_KIND[drawn[1].lower()]} fields are "
                    f"not supported; give the {name} explicitly"
                )


def zone(name: object, field: str = "timezone") -> ZoneInfo:
    if not isinstance(name, str) or not name.strip():
        raise BadRequest(f"{field} must be an IANA time zone name such as 'America/New_York'")
    try:
        return ZoneInfo(name.strip())
    # OSError: a folder of the zone database ('America', 'Etc') is opened as a file and fails.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise BadRequest(f"{field} {name!r} is not a known IANA time zone") from None


def _wall_to_utc_ms(wall: datetime, tz: ZoneInfo) -> int:
    """The instant of a wall-clock time: its first occurrence, or the end of the gap it falls in."""
    early, late = (wall.replace(tzinfo=tz, fold=fold) for fold in (0, 1))
    first = int(early.timestamp() * 1000)
    early_offset, late_offset = early.utcoffset(), late.utcoffset()
    if early_offset is None or late_offset is None or early_offset >= late_offset:
        return first  # unambiguous, or repeated: fold=0 is the first occurrence
    # In a spring-forward gap fold=0 applies the offset from before the change, which lands as
    # far past the change as the time was into the gap (02:30 -> 03:30, 02:59 -> 03:59), and
    # fold=1 lands as far before it. The slot belongs at the change itself, between the two.
    return _change_ms(tz, int(late.timestamp() * 1000), first)


def _change_ms(tz: ZoneInfo, before_ms: int, after_ms: int) -> int:
    """The instant in (before_ms, after_ms] at which `tz`'s UTC offset changes, to the second."""
    # zoneinfo does not expose its transitions; a gap spans an hour or so, a dozen halvings.
    lo, hi = before_ms // 1000, -(-after_ms // 1000)
    offset_before = datetime.fromtimestamp(lo, tz).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).utcoffset() == offset_before:
            lo = mid
        else:
            hi = mid
    return hi * 1000


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
    # Inside a repeated hour, start a repeat back so its second occurrences are seen. A slot in
    # a gap needs no margin: it maps to the change, so it lies after `after_ms` only when its
    # wall time lies after `after_wall`.
    back = timedelta(milliseconds=_repeat_ms(after_wall, tz) if every_hour else 0)
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
