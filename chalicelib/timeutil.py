"""Conversions between ISO 8601 text and epoch milliseconds (UTC)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from .errors import BadRequest

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
# The instants a datetime can show in UTC: an offset can push a valid local time outside them
# (0001-01-01T00:00+01:00 is in year 0), and such a time could be stored but never shown.
_MIN_MS = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _ONE_MS
_MAX_MS = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _ONE_MS


def parse_instant(value: object, field: str) -> int:
    """Parse an ISO 8601 instant that carries its offset into epoch ms.

    A time without an offset is refused: guessing a zone fires at the wrong hour.
    """
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{field} must be an ISO 8601 date-time string, e.g. 2030-01-01T10:30:00Z")
    text = value.strip()
    if len(text) > 10 and text[10] == "t":
        text = text[:10] + "T" + text[11:]  # RFC 3339 allows a lower-case 't' and 'z'
    if text.endswith("z"):
        text = text[:-1] + "Z"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(
            f"{field} is not an ISO 8601 date-time: {value!r} (expected e.g. 2030-01-01T10:30:00Z)"
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise BadRequest(
            f"{field} has no UTC offset: {value!r}; add 'Z' or '+hh:mm' so the moment is unambiguous"
        )
    # Integer arithmetic on timedeltas: float timestamps lose the millisecond.
    ms = (parsed - _EPOCH) // _ONE_MS
    if not _MIN_MS <= ms <= _MAX_MS:
        raise BadRequest(f"{field} is out of range: {value!r} is not between years 1 and 9999 in UTC")
    return ms


def format_instant(ms: int | None) -> str | None:
    """Epoch ms to ISO 8601 UTC with millisecond precision and a 'Z'."""
    if ms is None:
        return None
    # isoformat pads the year to 4 digits (strftime's %Y does not before 1000); timedelta
    # arithmetic is exact where a float timestamp is not.
    moment = _EPOCH + ms * _ONE_MS
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stored_ms(fields: Mapping[str, str], name: str) -> int | None:
    """An instant stored in a Redis hash field (epoch ms, possibly written as a float), if set."""
    value = fields.get(name)
    return int(float(value)) if value else None
