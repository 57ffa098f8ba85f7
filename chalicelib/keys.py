"""The Redis key schema: every key Punctual uses is built here and nowhere else.

| key                        | type | holds                                                      |
|----------------------------|------|------------------------------------------------------------|
| {p}:due                    | zset | items waiting for the tick; member = ref, score = due ms   |
| {p}:inflight               | zset | items handed to SQS or being delivered; score = the moment |
|                            |      | they are presumed lost (queue grace or delivery lease)     |
| {p}:msg:{id}               | hash | one webhook message (fields: see messages.Message)         |
| {p}:msgs:pending           | zset | ids of messages not yet finished; score = due ms (listing) |

A *ref* names an item in the due and inflight indexes: `m:{id}` for a webhook
message. The hash behind a ref is found with `item_key(ref)`; Lua scripts get
every key through KEYS, never build one.
"""

from __future__ import annotations

from dataclasses import dataclass

MESSAGE_REF = "m:"


@dataclass(frozen=True)
class Keys:
    prefix: str = "punctual"

    @property
    def due(self) -> str:
        return f"{self.prefix}:due"

    @property
    def inflight(self) -> str:
        return f"{self.prefix}:inflight"

    @property
    def pending_messages(self) -> str:
        return f"{self.prefix}:msgs:pending"

    def message(self, message_id: str) -> str:
        return f"{self.prefix}:msg:{message_id}"

    def item(self, ref: str) -> str:
        """The hash that holds the item a due-index ref names."""
        if ref.startswith(MESSAGE_REF):
            return self.message(ref[len(MESSAGE_REF):])
        raise ValueError(f"unknown item ref {ref!r}")


def message_ref(message_id: str) -> str:
    return MESSAGE_REF + message_id
