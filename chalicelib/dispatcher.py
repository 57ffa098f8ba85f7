"""The SQS consumer: waits out the last moment, claims by token, delivers, records the outcome."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from . import observability
from .agent_runner import AgentRunner
from .backoff import parse_retry_after, retry_delay_seconds
from .clock import Clock
from .config import Settings
from .errors import PunctualError
from .keys import MESSAGE_REF, RUN_REF, split_run_ref
from .messages import Message
from .scheduler import Scheduler
from .store import Claimed, Store, new_token
from .webhooks import DeliveryResult, HttpSender, webhook_headers

log = logging.getLogger(__name__)


class StatusSender(Protocol):
    def send_trailing_status(self) -> None: ...

# How long past the delivery timeout a claimed delivery is held before the
# tick presumes its dispatcher dead and delivers again.
LEASE_MARGIN_MS = 30_000


class Dispatcher:
    def __init__(
        self,
        store: Store,
        scheduler: Scheduler,
        runs: AgentRunner,
        events: StatusSender,
        sender: HttpSender,
        clock: Clock,
        settings: Settings,
    ) -> None:
        self._store = store
        self._scheduler = scheduler
        self._runs = runs
        self._events = events
        self._sender = sender
        self._clock = clock
        self._settings = settings

    def handle_bodies(self, bodies: Iterable[str], deadline_ms: Callable[[], int]) -> None:
        """Handle one SQS batch; each record waits for its own due instant in parallel."""
        items = list(bodies)
        if len(items) == 1:
            self.handle_body(items[0], deadline_ms)
            return
        with ThreadPoolExecutor(max_workers=len(items)) as pool:
            list(pool.map(lambda body: self.handle_body(body, deadline_ms), items))

    def handle_body(self, body: str, deadline_ms: Callable[[], int]) -> None:
        try:
            job = self._job_for(json.loads(body), deadline_ms)
        except (ValueError, KeyError, TypeError, AttributeError):
            # Not ours to retry: a malformed body would fail the same way forever.
            log.error("dropping malformed dispatch message %r", body[:200])
            return
        job()

    def _job_for(self, data: dict[str, object], deadline_ms: Callable[[], int]) -> Callable[[], None]:
        kind = str(data.get("kind", ""))
        if "ref" not in data:
            # The scheduler's own work: the rest of a tick, or a trailing scheduler:status.
            due = int(str(data.get("due") or 0))
            controls: dict[str, Callable[[], object]] = {
                "tick": lambda: self._scheduler.tick(deadline_ms()),
                "status": self._events.send_trailing_status,
            }
            action = controls[kind]

            def control() -> None:
                self._clock.sleep_until(due)
                action()

            return control
        claimed = Claimed(ref=str(data["ref"]), due_ms=int(str(data["due"])), token=str(data["token"]),
                          kind=kind)
        handler = self._handler_for(claimed)
        return lambda: handler(claimed)

    def _handler_for(self, claimed: Claimed) -> Callable[[Claimed], None]:
        if claimed.ref.startswith(MESSAGE_REF) and not claimed.kind:
            return self.deliver_message
        if claimed.ref.startswith(RUN_REF):
            split_run_ref(claimed.ref)
            runs = self._runs
            handlers = {"": runs.fire, "start": runs.start, "timeout": runs.check_timeout}
            return handlers[claimed.kind]
        raise ValueError(f"unknown item {claimed.ref!r} of kind {claimed.kind!r}")

    def deliver_message(self, claimed: Claimed) -> None:
        self._clock.sleep_until(claimed.due_ms)
        lease = self._clock.now_ms() + self._settings.webhook_timeout_seconds * 1000 + LEASE_MARGIN_MS
        message = self._store.begin_delivery(claimed, lease)
        if message is None:
            log.info("nothing to claim for %s (deleted, duplicate or superseded)", claimed.ref)
            return
        lateness = self._clock.now_ms() - claimed.due_ms  # when the request went out
        result = self._post(message)
        now = self._clock.now_ms()
        settings = self._settings
        if result.ok or not result.retryable or message.attempts > settings.webhook_max_retries:
            outcome = "delivered" if result.ok else "failed"
            self._finish(message, claimed.token, outcome, result.error)
            observability.delivery(message.id, outcome, message.attempts, lateness, result.error)
            return
        delay = retry_delay_seconds(
            message.attempts,
            settings.retry_base_seconds,
            settings.retry_max_delay_seconds,
            parse_retry_after(result.retry_after, now),
        )
        retry = Claimed(ref=claimed.ref, due_ms=now + int(delay * 1000), token=new_token())
        deadline = retry.due_ms + settings.queue_grace_seconds * 1000
        if self._store.finish_delivery(
            message, claimed.token, "retry", now, result.error, settings.retention_seconds,
            retry=retry, inflight_deadline_ms=deadline,
        ):
            self._scheduler.hand_to_queue([retry])
            observability.delivery(message.id, "retry", message.attempts, lateness, result.error)

    def _post(self, message: Message) -> DeliveryResult:
        body = message.payload_json.encode()
        timestamp = self._clock.now_ms() // 1000
        headers = webhook_headers(message.id, timestamp, body, self._settings.webhook_secret)
        return self._sender.post(message.webhook_url, body, headers, "webhookUrl")

    def _finish(self, message: Message, token: str, outcome: str, error: str | None) -> None:
        try:
            self._store.finish_delivery(
                message, token, outcome, self._clock.now_ms(), error, self._settings.retention_seconds
            )
        except PunctualError as exc:
            # The lease expires and the tick delivers again: at-least-once.
            log.error("could not record %s for %s: %s", outcome, message.id, exc)
