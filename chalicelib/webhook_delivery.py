"""Webhook delivery: one claimed message POSTed, its outcome recorded, its retry sent on.

The counterpart of agent_runner.py for webhook messages; the dispatcher hands each one here.
"""

from __future__ import annotations

import logging

from . import observability
from .backoff import parse_retry_after
from .claims import Claimed, Retry, plan_retry
from .clock import Clock
from .config import Settings
from .dispatch_queue import Handoff
from .errors import PunctualError
from .messages import Message
from .sender import DeliveryResult, HttpSender
from .standard_webhooks import webhook_headers
from .store import WAITING, Finished, Store

log = logging.getLogger(__name__)

# How long past the delivery timeout a claimed delivery is held before the
# tick presumes its dispatcher dead and delivers again.
LEASE_MARGIN_MS = 30_000


class WebhookDelivery:
    def __init__(
        self, store: Store, handoff: Handoff, sender: HttpSender, clock: Clock, settings: Settings
    ) -> None:
        self._store = store
        self._handoff = handoff
        self._sender = sender
        self._clock = clock
        self._settings = settings

    def deliver(self, claimed: Claimed) -> list[Claimed]:
        """Deliver one claimed message; returns the claims that waited for its destination's
        call, which the caller delivers next (this thread is the one that call freed)."""
        self._clock.sleep_until(claimed.due_ms)
        settings = self._settings
        now = self._clock.now_ms()
        lease = now + settings.webhook_timeout_seconds * 1000 + LEASE_MARGIN_MS
        message = self._store.begin_delivery(claimed, lease, now, settings.destination_max_calls)
        if message is WAITING:
            log.debug("%s waits for a call to %s to end", claimed.ref, claimed.dest)
            return []
        if message is None:
            log.info("nothing to claim for %s (deleted, duplicate or superseded)", claimed.ref)
            # It may have been handed on to this thread to take a call that another freed.
            if claimed.dest and settings.destination_max_calls:
                return self._store.hand_on(claimed.dest, now, settings.destination_max_calls)
            return []
        assert isinstance(message, Message)
        # When the request went out, against when it could first have gone out: a message
        # accepted with a scheduleTo in the past is due at its acceptance, not years ago.
        lateness = self._clock.now_ms() - max(claimed.due_ms, message.created_ms)
        result = self._post(message)
        now = self._clock.now_ms()
        retry = None
        if not result.ok and result.retryable:
            retry = plan_retry(claimed.ref, message.attempts, now, settings.webhook_retries,
                               settings.queue_grace_ms, parse_retry_after(result.retry_after, now),
                               dest=claimed.dest)
        outcome = "retry" if retry else "delivered" if result.ok else "failed"
        finished = self._finish(message, claimed, outcome, result.error, retry)
        if finished is None:
            return []
        if finished.recorded:
            if retry is not None:
                self._handoff.send([retry.claim])
            observability.delivery(message.id, outcome, message.attempts, lateness, result.error)
        return finished.handed_on

    def _post(self, message: Message) -> DeliveryResult:
        body = message.payload_json.encode()
        timestamp = self._clock.now_ms() // 1000
        headers = webhook_headers(message.id, timestamp, body, self._settings.webhook_secret)
        return self._sender.post(message.webhook_url, body, headers, "webhookUrl")

    def _finish(self, message: Message, claimed: Claimed, outcome: str, error: str | None,
                retry: Retry | None) -> Finished | None:
        settings = self._settings
        try:
            return self._store.finish_delivery(
                message, claimed, outcome, self._clock.now_ms(), error, settings.retention_seconds,
                settings.destination_max_calls, retry=retry,
            )
        except PunctualError as exc:
            # The lease expires and the tick delivers again: at-least-once.
            log.error("could not record %s for %s: %s", outcome, message.id, exc)
            return None
