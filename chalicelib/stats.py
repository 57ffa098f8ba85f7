"""GET /stats: messages by status, the last hour minute by minute, agent runs by outcome.

Bounded memory whatever the traffic: two counters the scripts keep on each transition
(`queued`, `delivering`: keys.message_counts), what the indexes already hold (pending, overdue,
failed), and one small hash per minute (keys.stats_minute) that the scripts recording outcomes
count into and that expires STATS_TTL_SECONDS after its first count. The README's Stats section
says how each number is computed and what it costs.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import dead_letters
from .shards import unique
from .timeutil import format_instant

if TYPE_CHECKING:  # the store records into the minutes with this module's figures
    from .store import Store

MINUTES = 60  # minutes shown, the current one last
MINUTE_MS = 60_000
STATS_TTL_SECONDS = 2 * 3600
# Upper bounds (ms) of the lateness histogram's buckets (0 … 16); the last bucket holds everything
# from 300 s on.
LATENESS_BOUNDS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000,
                      300_000)
# A webhook attempt is counted in one field of its minute: its outcome's initial and its call's
# lateness bucket (`d3`: delivered, 5 to 10 ms late; `r`: a retry spent without a call).
_OUTCOMES = {"d": "delivered", "r": "retried", "f": "failed"}


def lateness_bucket(lateness_ms: int) -> int:
    """The histogram bucket a call that went out `lateness_ms` after its due instant falls in."""
    return bisect.bisect_right(LATENESS_BOUNDS_MS, max(0, lateness_ms))


def attempt_field(outcome: str, lateness_ms: int | None) -> str:
    """The field of a minute's stats that counts a webhook attempt (outcome: delivered, retry or
    failed; lateness_ms None: no call was made)."""
    return outcome[0] + ("" if lateness_ms is None else str(lateness_bucket(lateness_ms)))


def run_field(outcome: str, timed_out: bool) -> str:
    """The field of a minute's stats that counts a run attempt (outcome: completed, retry or
    failed; timed_out: ended by its timeout)."""
    return "run." + ("retried" if outcome == "retry" else outcome) + (".timeout" if timed_out else "")


def percentile(counts: list[int], fraction: float) -> float | None:
    """The lateness below which `fraction` of the counted calls fall, interpolated within its
    bucket (the last, open bucket answers its lower bound); None when nothing was counted."""
    total = sum(counts)
    if not total:
        return None
    rank = fraction * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            lower = LATENESS_BOUNDS_MS[i - 1] if i else 0
            if i == len(LATENESS_BOUNDS_MS):
                return float(lower)
            upper = LATENESS_BOUNDS_MS[i]
            return round(lower + (upper - lower) * (rank - seen) / count, 1)
        seen += count
    return None  # not reached: the last bucket with a count holds the rank


def minute_row(minute: int, fields: Mapping[str, str]) -> dict[str, Any]:
    outcomes = dict.fromkeys(_OUTCOMES.values(), 0)
    histogram = [0] * (len(LATENESS_BOUNDS_MS) + 1)
    for name, value in fields.items():
        if name.startswith("run."):
            continue  # counted in agentRuns
        outcome = _OUTCOMES[name[0]]
        outcomes[outcome] += int(value)
        if name[1:]:
            histogram[int(name[1:])] += int(value)
    return {"minute": format_instant(minute * MINUTE_MS), **outcomes,
            "latenessP50Ms": percentile(histogram, 0.5), "latenessP99Ms": percentile(histogram, 0.99)}


def run_outcomes(buckets: list[Mapping[str, str]]) -> dict[str, int]:
    counted = {name: sum(int(fields.get(name) or 0) for fields in buckets)
               for name in (run_field(o, t) for o in ("completed", "failed", "retry") for t in (False, True))}
    return {
        "completed": counted["run.completed"] + counted["run.completed.timeout"],
        "failed": counted["run.failed"] + counted["run.failed.timeout"],
        "retried": counted["run.retried"] + counted["run.retried.timeout"],
        "timedOut": counted["run.failed.timeout"] + counted["run.retried.timeout"],
    }


def read(store: Store, now_ms: int, retention_seconds: int) -> dict[str, Any]:
    """The `messages`, `minutes` and `agentRuns` parts of GET /stats, added up over the shards
    (and the bare head's, where agent runs count), in one pipeline (a round trip per node)."""
    first = now_ms // MINUTE_MS - MINUTES + 1
    minutes = range(first, first + MINUTES)
    shards = unique([store.keys, *store.shards.listed()])
    per_shard = 5 + len(minutes)  # the answers each shard's reads give, in the order queued

    def read_all() -> list[Any]:
        pipe = store.client.pipeline(transaction=False)
        for k in shards:
            pipe.hmget(k.message_counts, "queued", "delivering")
            pipe.zcard(k.pending_messages)
            pipe.zcount(k.pending_messages, "-inf", now_ms)
            dead_letters.trim(pipe, k, now_ms, retention_seconds)
            pipe.zcard(k.failed_messages)
            for minute in minutes:
                pipe.hgetall(k.stats_minute(minute * MINUTE_MS))
        return pipe.execute()

    answers = store.call(read_all)
    queued = delivering = pending = overdue = failed_held = 0
    buckets: list[list[Mapping[str, str]]] = [[] for _ in minutes]
    for i in range(len(shards)):
        (shard_queued, shard_delivering), shard_pending, shard_overdue, _, shard_failed, *shard_buckets = (
            answers[i * per_shard:(i + 1) * per_shard])
        # The counters start at zero with the release that keeps them: messages already under way
        # then could take one below zero.
        queued += max(0, int(shard_queued or 0))
        delivering += max(0, int(shard_delivering or 0))
        pending += int(shard_pending)
        overdue += int(shard_overdue)
        failed_held += int(shard_failed)
        for held, fields in zip(buckets, shard_buckets, strict=True):
            held.append(fields)
    rows = [minute_row(minute, merged(fields)) for minute, fields in zip(minutes, buckets, strict=True)]
    every_bucket = [fields for minute_buckets in buckets for fields in minute_buckets]
    return {
        "messages": {
            "scheduled": max(0, pending - queued - delivering),
            "queued": queued,
            "delivering": delivering,
            "delivered": sum(row["delivered"] for row in rows),
            "failed": sum(row["failed"] for row in rows),
            "pending": pending,
            "overdue": overdue,
            "failedHeld": failed_held,
        },
        "minutes": rows,
        "agentRuns": run_outcomes(every_bucket),
    }


def merged(buckets: list[Mapping[str, str]]) -> dict[str, str]:
    """One minute's counts over the shards' buckets: every field is a count."""
    total: dict[str, int] = {}
    for fields in buckets:
        for name, count in fields.items():
            total[name] = total.get(name, 0) + int(count)
    return {name: str(count) for name, count in total.items()}
