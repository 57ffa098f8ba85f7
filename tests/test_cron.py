"""Cron maths as a table: no clock, no Redis."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from chalicelib.cron import check_expression, next_after, zone
from chalicelib.errors import BadRequest


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def iso(value: int, tz: str) -> str:
    return datetime.fromtimestamp(value / 1000, zone(tz)).isoformat()


def slots(expression: str, tz: str, start: str, count: int) -> list[str]:
    out = []
    at = ms(start)
    for _ in range(count):
        at = next_after(expression, zone(tz), at)
        out.append(iso(at, tz))
    return out


@pytest.mark.parametrize(
    "expression, tz, start, expected",
    [
        ("*/5 * * * *", "UTC", "2030-01-01T10:02:30+00:00",
         ["2030-01-01T10:05:00+00:00", "2030-01-01T10:10:00+00:00"]),
        ("*/5 * * * *", "UTC", "2030-01-01T10:05:00+00:00",  # strictly after
         ["2030-01-01T10:10:00+00:00"]),
        ("0 */6 * * *", "UTC", "2030-01-01T05:59:59+00:00",
         ["2030-01-01T06:00:00+00:00", "2030-01-01T12:00:00+00:00"]),
        ("0 9 * * 1-5", "UTC", "2030-01-04T10:00:00+00:00",  # a Friday
         ["2030-01-07T09:00:00+00:00", "2030-01-08T09:00:00+00:00"]),
        ("0 9 * * MON-FRI", "UTC", "2030-01-05T00:00:00+00:00",
         ["2030-01-07T09:00:00+00:00"]),
        ("0 0 * * 0", "UTC", "2030-01-01T00:00:00+00:00", ["2030-01-06T00:00:00+00:00"]),
        ("0 0 1 JAN *", "UTC", "2030-06-01T00:00:00+00:00", ["2031-01-01T00:00:00+00:00"]),
        ("@hourly", "UTC", "2030-01-01T10:00:00+00:00", ["2030-01-01T11:00:00+00:00"]),
        ("@daily", "UTC", "2030-01-01T10:00:00+00:00", ["2030-01-02T00:00:00+00:00"]),
        ("0 9 * * *", "Asia/Tokyo", "2029-12-31T23:00:00+00:00", ["2030-01-01T09:00:00+09:00"]),
        # New York, spring forward (2030-03-10, 02:00 -> 03:00): a slot in the skipped hour
        # runs once, at the first instant after the gap (03:00 EDT = 07:00Z), however late in
        # the hour it was and however many slots fell there; half-hourly slots neither skip nor
        # double.
        ("30 2 * * *", "America/New_York", "2030-03-09T12:00:00-05:00",
         ["2030-03-10T03:00:00-04:00", "2030-03-11T02:30:00-04:00"]),
        ("30 2 * * *", "America/New_York", "2030-03-10T05:00:00+00:00",
         ["2030-03-10T03:00:00-04:00", "2030-03-11T02:30:00-04:00", "2030-03-12T02:30:00-04:00"]),
        ("59 2 * * *", "America/New_York", "2030-03-10T05:00:00+00:00",
         ["2030-03-10T03:00:00-04:00", "2030-03-11T02:59:00-04:00", "2030-03-12T02:59:00-04:00"]),
        ("*/15 2 * * *", "America/New_York", "2030-03-10T05:00:00+00:00",
         ["2030-03-10T03:00:00-04:00", "2030-03-11T02:00:00-04:00", "2030-03-11T02:15:00-04:00"]),
        ("0,30 2 * * *", "America/New_York", "2030-03-10T05:00:00+00:00",
         ["2030-03-10T03:00:00-04:00", "2030-03-11T02:00:00-04:00", "2030-03-11T02:30:00-04:00"]),
        ("15,45 2 * * *", "America/New_York", "2030-03-10T05:00:00+00:00",
         ["2030-03-10T03:00:00-04:00", "2030-03-11T02:15:00-04:00", "2030-03-11T02:45:00-04:00"]),
        ("0,30 2 * * *", "America/New_York", "2030-03-10T06:59:59+00:00",  # a second before the gap
         ["2030-03-10T03:00:00-04:00", "2030-03-11T02:00:00-04:00"]),
        ("*/30 * * * *", "America/New_York", "2030-03-10T01:00:00-05:00",
         ["2030-03-10T01:30:00-05:00", "2030-03-10T03:00:00-04:00", "2030-03-10T03:30:00-04:00"]),
        ("0 9 * * *", "America/New_York", "2030-03-09T10:00:00-05:00",
         ["2030-03-10T09:00:00-04:00", "2030-03-11T09:00:00-04:00"]),
        # New York, fall back (2030-11-03, 02:00 -> 01:00): a daily 01:30 runs once, not twice;
        # schedules that run every hour go on through both 01:00 hours, without a gap.
        ("30 1 * * *", "America/New_York", "2030-11-02T12:00:00-04:00",
         ["2030-11-03T01:30:00-04:00", "2030-11-04T01:30:00-05:00"]),
        ("0 * * * *", "America/New_York", "2030-11-03T00:30:00-04:00",
         ["2030-11-03T01:00:00-04:00", "2030-11-03T01:00:00-05:00", "2030-11-03T02:00:00-05:00"]),
        ("*/20 * * * *", "America/New_York", "2030-11-03T01:30:00-04:00",
         ["2030-11-03T01:40:00-04:00", "2030-11-03T01:00:00-05:00", "2030-11-03T01:20:00-05:00",
          "2030-11-03T01:40:00-05:00", "2030-11-03T02:00:00-05:00"]),
        ("*/20 * * * *", "America/New_York", "2030-11-03T01:10:00-05:00",  # inside the repeat
         ["2030-11-03T01:20:00-05:00", "2030-11-03T01:40:00-05:00"]),
        ("15 1-3 * * *", "America/New_York", "2030-11-03T00:00:00-04:00",  # fixed hours: once
         ["2030-11-03T01:15:00-04:00", "2030-11-03T02:15:00-05:00"]),
        # São Paulo's last DST start (2018-11-04, midnight did not exist).
        ("0 0 * * *", "America/Sao_Paulo", "2018-11-03T12:00:00-03:00",
         ["2018-11-04T01:00:00-02:00", "2018-11-05T00:00:00-02:00"]),
        # ... and its end (2019-02-17, 00:00 -> 23:00 the day before): 23:30 runs once.
        ("30 23 * * *", "America/Sao_Paulo", "2019-02-16T12:00:00-02:00",
         ["2019-02-16T23:30:00-02:00", "2019-02-17T23:30:00-03:00"]),
        # Since 2019 São Paulo keeps -03:00 all year.
        ("0 0 * * *", "America/Sao_Paulo", "2030-11-02T12:00:00-03:00",
         ["2030-11-03T00:00:00-03:00"]),
    ],
)
def test_next_slots(expression: str, tz: str, start: str, expected: list[str]) -> None:
    assert slots(expression, tz, start, len(expected)) == expected


@pytest.mark.parametrize(
    "expression, fragment",
    [
        ("", "required"),
        (None, "required"),
        ("* * * *", "5 fields"),
        ("* * * * * *", "5 fields"),
        ("61 * * * *", "not valid"),
        ("* * * * FUNDAY", "not valid"),
        ("@fortnightly", "not valid"),
        # croniter's random and hashed fields: R is drawn afresh at each parse, H needs an id.
        ("R * * * *", "random ('R') fields are not supported; give the minute explicitly"),
        ("r * * * *", "random ('R') fields are not supported; give the minute explicitly"),
        ("R/15 * * * *", "random ('R') fields are not supported"),
        ("R(0-29) * * * *", "random ('R') fields are not supported"),
        ("0 R * * *", "random ('R') fields are not supported; give the hour explicitly"),
        ("0 0 * * 1,R", "random ('R') fields are not supported; give the day-of-week explicitly"),
        ("H * * * *", "hashed ('H') fields are not supported; give the minute explicitly"),
        ("0 H(0-5) * * *", "hashed ('H') fields are not supported; give the hour explicitly"),
    ],
)
def test_bad_expressions(expression: object, fragment: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(fragment)):
        check_expression(expression)


@pytest.mark.parametrize(
    "expression",
    ["0 9 * * MON-FRI", "0 0 1 JAN *", "0 0 * MAR,APR THU", "0 0 * * SAT,SUN", "*/15 8-18 * * 1-5",
     "0,30 * * * *", "@hourly", "@daily"],
)
def test_good_expressions(expression: str) -> None:
    assert check_expression(f" {expression} ") == expression


def test_an_expression_that_never_fires() -> None:
    with pytest.raises(BadRequest, match="never fires"):
        next_after(check_expression("0 0 31 2 *"), zone("UTC"), ms("2030-01-01T00:00:00+00:00"))


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "UTC+3", 5])
def test_unknown_zones(name: object) -> None:
    with pytest.raises(BadRequest, match="time zone"):
        zone(name)
