"""Flow control: how many calls a group of webhooks makes at once, and how often.

A message may name a key that its calls are counted under (several destinations, or one
customer's share of one); without one, its destination (scheme, host and port) is the key.
QStash's flow control and BullMQ's group limits are the anchors: `parallelism` is calls under
way at once, `ratePerSecond` starts a second. What is held back waits in Redis (lua/flow.lua),
not on a thread.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import BadRequest
from .ids import check_id

FIELD = "flowControl"
MAX_PARALLELISM = 1000
# flow.lua spaces starts a whole number of ms apart: 1,000 a second is the finest it can.
MAX_RATE_PER_SECOND = 1000.0
# One start every 100 s: a claim postponed to its next start stays within SQS's longest delay.
MIN_RATE_PER_SECOND = 0.01


@dataclass(frozen=True)
class FlowControl:
    key: str | None  # None: the message's destination
    parallelism: int | None
    rate_per_second: float | None

    @classmethod
    def parse(cls, value: object) -> FlowControl:
        if not isinstance(value, dict):
            raise BadRequest(f"{FIELD} must be an object with key, parallelism and/or ratePerSecond")
        unknown = sorted(set(value) - {"key", "parallelism", "ratePerSecond"})
        if unknown:
            raise BadRequest(f"{FIELD} has unknown field(s): {', '.join(unknown)}; "
                             "it takes key, parallelism and ratePerSecond")
        key = value.get("key")
        if key is not None:
            key = check_id(key, f"{FIELD}.key")
        parallelism = value.get("parallelism")
        if parallelism is not None and (
            not isinstance(parallelism, int) or isinstance(parallelism, bool)
            or not 1 <= parallelism <= MAX_PARALLELISM
        ):
            raise BadRequest(f"{FIELD}.parallelism must be a whole number from 1 to {MAX_PARALLELISM}, "
                             f"got {parallelism!r}")
        rate = value.get("ratePerSecond")
        if rate is not None:
            if not isinstance(rate, int | float) or isinstance(rate, bool) or not math.isfinite(rate) \
                    or not MIN_RATE_PER_SECOND <= rate <= MAX_RATE_PER_SECOND:
                raise BadRequest(f"{FIELD}.ratePerSecond must be a number from {MIN_RATE_PER_SECOND} "
                                 f"to {MAX_RATE_PER_SECOND:g}, got {rate!r}")
            rate = float(rate)
        if parallelism is None and rate is None:
            raise BadRequest(f"{FIELD} needs parallelism, ratePerSecond or both")
        return cls(key=key, parallelism=parallelism, rate_per_second=rate)

    @classmethod
    def from_hash(cls, fields: Mapping[str, str]) -> FlowControl | None:
        parallelism = fields.get("flowParallelism")
        rate = fields.get("flowRate")
        if parallelism is None and rate is None:
            return None
        return cls(key=fields.get("flowKey") or None,
                   parallelism=int(parallelism) if parallelism else None,
                   rate_per_second=float(rate) if rate else None)

    def to_hash(self) -> tuple[tuple[str, str], ...]:
        """The message hash fields that hold it (read by lua/begin_delivery.lua)."""
        pairs = [("flowKey", self.key), ("flowParallelism", self.parallelism),
                 ("flowRate", None if self.rate_per_second is None else repr(self.rate_per_second))]
        return tuple((name, str(value)) for name, value in pairs if value is not None)

    def to_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"key": self.key, "parallelism": self.parallelism,
                                 "ratePerSecond": self.rate_per_second}
        return {name: value for name, value in shown.items() if value is not None}
