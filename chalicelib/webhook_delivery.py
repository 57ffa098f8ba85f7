"""Webhook delivery: one claimed message POSTed, its outcome recorded, its retry sent on.

The counterpart of agent_runner.py for webhook messages; the dispatcher hands each one here.
"""

from __future__ import annotations

import logging

from . import observability
from .attempt_log import Attempt, AttemptKind
from .backoff import parse_retry_after
from .claims import Claimed, Retry, plan_retry
from .clock import Clock
from .config import Settings
from .destinations import Health, health_of
from .dispatch_queue import Handoff
from .errors import PunctualError
from .messages import Message
from .sender import DeliveryResult, HttpSender
from .standard_webhooks import webhook_headers
from .store import WAITING, BreakerOpen, Finished, Postponed, Store
from .timeutil import format_instant

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
        """Deliver one claimed message; returns the claims that waited for its flow's call,
        which the caller delivers next (this thread is the one that call freed)."""
        self._clock.sleep_until(claimed.due_ms)
        settings = self._settings
        began = self._begin(claimed)
        if isinstance(began, list):
            return began
        started = self._clock.now_ms()
        if isinstance(began, BreakerOpen):
            message = began.message
            result = DeliveryResult(ok=False, retryable=True, error=(
                f"not sent: the circuit breaker of {claimed.dest} is open after repeated failures; "
                f"it lets a probe through from {format_instant(began.probe_at_ms)}"))
            lateness = None
        else:
            assert isinstance(began, Message)
            message = began
            # When the request went out, against when it could first have gone out: a message
            # accepted with a scheduleTo in the past is due at its acceptance, not years ago.
            lateness = started - max(claimed.due_ms, message.created_ms)
            result = self._post(message)
        now = self._clock.now_ms()
        retry_after = parse_retry_after(result.retry_after, now)
        retry = None
        if not result.ok and result.retryable:
            retry = plan_retry(claimed.ref, message.attempts, now, settings.webhook_retries,
                               settings.queue_grace_ms, retry_after, dest=claimed.dest, flow=claimed.flow,
                               shard=claimed.shard)
        outcome = "retry" if retry else "delivered" if result.ok else "failed"
        pause_until = None
        if result.status_code == 429 and retry_after is not None:
            # The whole flow waits as long as the receiver asked (within the retry cap).
            pause_until = now + int(min(retry_after, settings.retry_max_delay_seconds) * 1000)
        attempt = Attempt(
            message.attempts, AttemptKind.DELIVERY if lateness is not None else AttemptKind.BREAKER_OPEN,
            started, result.status_code, result.error, now - started if lateness is not None else None,
            retry.claim.due_ms if retry else None)
        finished = self._finish(message, claimed, outcome, result, retry, pause_until, attempt, lateness)
        if finished is None:
            return []
        if finished.recorded:
            if retry is not None:
                self._handoff.send([retry.claim])
            observability.delivery(message.id, outcome, message.attempts, lateness, result.error)
        return finished.handed_on

    def _begin(self, claimed: Claimed) -> Message | BreakerOpen | list[Claimed]:
        """Claim the message for its attempt; a list when there is nothing to deliver now: the
        claims handed on to this thread instead (see Store.begin_delivery)."""
        settings = self._settings
        now = self._clock.now_ms()
        lease = now + settings.webhook_timeout_seconds * 1000 + LEASE_MARGIN_MS
        began = self._store.begin_delivery(claimed, lease, now, settings.destination_max_calls,
                                           settings.queue_grace_ms)
        if began is WAITING:
            log.debug("%s waits for a call to %s to end", claimed.ref, claimed.flow or claimed.dest)
            return []
        if isinstance(began, Postponed):
            # Its flow is paused or over its rate: the claim goes on, due when it may start.
            self._handoff.send([began.claim])
            return []
        if began is None:
            log.info("nothing to claim for %s (deleted, duplicate or superseded)", claimed.ref)
            # It may have been handed on to this thread to take a call that another freed.
            if claimed.dest:
                return self._store.hand_on(claimed, now, settings.destination_max_calls)
            return []
        assert isinstance(began, Message | BreakerOpen)
        return began

    def _post(self, message: Message) -> DeliveryResult:
        body = message.payload_json.encode()
        timestamp = self._clock.now_ms() // 1000
        # Its own secret, when it was given one: a receiver's secret signs only what goes to it.
        secret = message.webhook_secret or self._settings.webhook_secret
        headers = webhook_headers(message.id, timestamp, body, secret)
        return self._sender.post(message.webhook_url, body, headers, "webhookUrl")

    def _finish(self, message: Message, claimed: Claimed, outcome: str, result: DeliveryResult,
                retry: Retry | None, pause_until: int | None, attempt: Attempt,
                lateness: int | None) -> Finished | None:
        """Record the attempt; one with no `lateness` made no call (its breaker was open)."""
        took_call = lateness is not None
        try:
            return self._store.finish_delivery(
                message, claimed, outcome, self._clock.now_ms(), result.error, self._settings,
                health=health_of(result) if took_call else Health.NONE, attempt=attempt,
                lateness_ms=lateness, retry=retry,
                pause_until_ms=pause_until, took_call=took_call,
            )
        except PunctualError as exc:
            # The lease expires and the tick delivers again: at-least-once.
            log.error("could not record %s for %s: %s", outcome, message.id, exc)
            return None
