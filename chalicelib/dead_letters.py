"""Failed messages held for inspection: the dead-letter listing (GET /messages?status=failed).

finish_delivery.lua indexes a message that fails for good in keys.failed_messages, scored by
minus its failure's ms so that the score order, which the cursor paging of Store.page follows,
is newest first; create_message.lua (a new message of that id, or a replay) and
delete_message.lua take it out, and entries past retention (their message has expired) are
trimmed as failures are recorded and as the listing is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .messages import MessageStatus
from .timeutil import format_instant

if TYPE_CHECKING:  # the store counts failures with stats.py, which trims with this module
    from .keys import Keys
    from .store import Page, Store


@dataclass(frozen=True)
class FailedMessage:
    id: str
    webhook_url: str
    failed_ms: int
    last_error: str | None
    attempts: int

    def to_dict(self) -> dict[str, Any]:
        return {"messageId": self.id, "webhookUrl": self.webhook_url,
                "failedAt": format_instant(self.failed_ms), "lastError": self.last_error,
                "attempts": self.attempts}


def trim(pipe: Any, keys: Keys, now_ms: int, retention_seconds: int) -> None:
    """Queue, on `pipe`, the removal of one shard's entries past retention."""
    pipe.zremrangebyscore(keys.failed_messages, f"({retention_seconds * 1000 - now_ms}", "+inf")


def page_failed(store: Store, limit: int, cursor: str | None, now_ms: int, retention_seconds: int,
                ) -> tuple[Page, list[FailedMessage]]:
    """One page of failed messages, newest first, and what the listing shows of each."""
    def trimmed() -> None:
        pipe = store.client.pipeline(transaction=False)
        for keys in store.shards.listed():
            trim(pipe, keys, now_ms, retention_seconds)
        pipe.execute()

    store.call(trimmed)
    page = store.page_shards(lambda keys: keys.failed_messages, limit, cursor)

    def read() -> list[Any]:
        pipe = store.client.pipeline(transaction=False)
        for (message_id, _), keys in zip(page.items, page.shards or [], strict=True):
            pipe.hmget(keys.message(message_id), "status", "url", "finishedAt", "lastError", "attempts")
        return pipe.execute()

    shown = []
    rows = store.call(read) if page.items else []
    for (message_id, score), (status, url, finished, error, attempts) in zip(page.items, rows, strict=True):
        if status == MessageStatus.FAILED:  # else expired, deleted or replayed since the page was read
            shown.append(FailedMessage(message_id, url, int(finished or -score), error or None,
                                       int(attempts or 0)))
    return page, shown
