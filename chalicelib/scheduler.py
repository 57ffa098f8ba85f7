"""The per-minute tick: claims what falls due within the window and hands it to SQS."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import observability
from .agent_runner import AgentRunner
from .attempt_log import Attempt, AttemptKind
from .claims import Claimed, Created, WayIn, message_ref, new_token
from .clock import Clock
from .config import Settings
from .dispatch_queue import DispatchQueue, Handoff
from .errors import PunctualError
from .keys import Keys
from .messages import NewMessage
from .store import Store
from .targets import destination

log = logging.getLogger(__name__)

CLAIM_BATCH = 500
# Shards claimed at once by one tick: each waits on its own Redis node (shards.py).
TICK_THREADS = 8
# A second's sweep marker outlives the second by this much, in case the sweep comes late.
SWEEP_MARKER_MARGIN_MS = 60_000


@dataclass(frozen=True)
class TickReport:
    reclaimed: int
    claimed: int
    send_failures: int
    handed_on: bool
    expired_runs: int = 0
    failed_shards: tuple[str, ...] = ()  # the shards Redis did not answer for, by head

    def to_dict(self) -> dict[str, object]:
        return {
            "expiredRuns": self.expired_runs,
            "reclaimed": self.reclaimed,
            "claimed": self.claimed,
            "sendFailures": self.send_failures,
            "handedOn": self.handed_on,
            "failedShards": list(self.failed_shards),
        }


@dataclass(frozen=True)
class _ShardTick:
    reclaimed: int = 0
    claimed: int = 0
    send_failures: int = 0
    out_of_time: bool = False
    failed: bool = False


class Scheduler:
    def __init__(
        self,
        store: Store,
        queue: DispatchQueue,
        handoff: Handoff,
        clock: Clock,
        settings: Settings,
        runner: AgentRunner,
        claim_batch: int = CLAIM_BATCH,
    ) -> None:
        self._store = store
        self._runner = runner
        self._batch = claim_batch
        self._queue = queue
        self._handoff = handoff
        self._clock = clock
        self._settings = settings

    @property
    def window_ms(self) -> int:
        return self._settings.tick_window_seconds * 1000

    def admit(self, new: NewMessage, replay: bool = False) -> None:
        """Store a new message and set it on its way to SQS; never waits for the webhook. A
        `replay` sets a delivered or failed message on its way again, the same way.

        Beyond the window, the tick claims it. Inside the window (which the last tick already
        covered) the messages of one second wait in the due index for one sweep of that second,
        asked for by the first of them: a burst costs one SQS message, not one each. A message
        due too soon for a sweep to arrive first is claimed and sent on its own.
        """
        now = self._clock.now_ms()
        until_due = new.due_ms - now
        flow = new.flow_control.key if new.flow_control else None
        shard = self._store.place(new, now, replay)
        claim = Claimed(ref=message_ref(new.id), due_ms=new.due_ms, token=new_token(),
                        dest=destination(new.webhook_url), flow=flow or "", shard=shard.shard)
        created = self._store.create_message(
            new, shard, now, self._way_in(until_due), claim.token,
            max(new.due_ms, now) + self._settings.queue_grace_ms, until_due + SWEEP_MARKER_MARGIN_MS,
            replay=Attempt(0, AttemptKind.REPLAY, now, next_retry_ms=new.due_ms) if replay else None,
        )
        try:
            if created is Created.CLAIMED:
                self._handoff.send([claim])
            elif created is Created.ASK_SWEEP:
                self._send_sweep(new.due_ms // 1000 * 1000, shard)
        except PunctualError as exc:
            # Stored and indexed (due or in flight): the tick claims or reclaims it, so the
            # message is accepted all the same.
            log.warning("could not hand %s to SQS now: %s", new.id, exc)

    def admit_slot(self, due_ms: int) -> None:
        """Set a cron slot just indexed on its way, as `admit` does a message.

        Inside the window the last tick covered, the next tick may come after the slot falls
        due: a schedule set at 09:59:55 to run every minute would first run at the next tick,
        up to a minute late. Like messages, the slots of one second share one sweep, so a burst
        of schedules costs one SQS message; a slot due too soon for that is claimed at once.
        """
        until_due = due_ms - self._clock.now_ms()
        way_in = self._way_in(until_due)
        if way_in is WayIn.TICK:
            return
        try:
            if way_in is WayIn.SWEEP:
                second = due_ms // 1000 * 1000
                state = self._store.ask_sweep(second, until_due + SWEEP_MARKER_MARGIN_MS)
                if state == "ask":
                    self._send_sweep(second, self._store.keys)
                if state != "swept":
                    return
            self._claim_between(due_ms, due_ms, self._store.keys)
        except PunctualError as exc:
            log.warning("could not set the slot due at %d on its way now (the tick claims it): %s",
                        due_ms, exc)

    def _send_sweep(self, second_ms: int, shard: Keys) -> None:
        """Send the sweep of a shard's second whose marker this caller set."""
        if not self._queue.send_control("sweep", second_ms, shard.shard):
            # The next item of that second asks again; the tick claims those before it, late.
            self._store.sweep_marker_lost(second_ms, shard)

    def _way_in(self, until_due_ms: int) -> WayIn:
        """How an item indexed now, due in `until_due_ms`, reaches SQS."""
        lead_ms = self._settings.lead_seconds * 1000
        if until_due_ms > self.window_ms:
            return WayIn.TICK
        if lead_ms and until_due_ms > lead_ms + 1000:
            return WayIn.SWEEP
        return WayIn.CLAIM

    def sweep(self, second_ms: int, shard: str = "") -> int:
        """Claim the items of one shard's due second that wait for their sweep; hand them out in
        groups.

        Marked swept first: a message of this second created from now on is claimed by its own
        POST, and one created before is in the due index when it is read below.
        """
        now = self._clock.now_ms()
        keys = self._store.shards.named(shard)
        self._store.mark_swept(second_ms, second_ms + 1000 - now + SWEEP_MARKER_MARGIN_MS, keys)
        return self._claim_between(second_ms, second_ms + 999, keys)

    def _claim_between(self, since_ms: int, until_ms: int, keys: Keys) -> int:
        """Claim everything in one shard due from `since_ms` to `until_ms` and hand it to SQS."""
        claimed = 0
        while True:
            batch, more = self._store.claim_due(until_ms, self._settings.queue_grace_ms, self._batch,
                                                since_ms=since_ms, keys=keys)
            if batch:
                self._handoff.send(batch)
            claimed += len(batch)
            if not more:
                return claimed

    def tick(self, deadline_ms: int) -> TickReport:
        """Claim everything due before now + window, stopping at `deadline_ms`.

        What is left when time runs out is handed on to a dispatcher through
        the queue instead of running past the Lambda's timeout.
        """
        started = time.perf_counter()
        report = self._tick(deadline_ms)
        observability.tick(report.to_dict(), (time.perf_counter() - started) * 1000)
        return report

    def _tick(self, deadline_ms: int) -> TickReport:
        now = self._clock.now_ms()
        expired = self._runner.heartbeat_and_expire(now)
        shards = self._store.shards.claimed()
        if len(shards) == 1:
            ticks = [self._tick_shard(shards[0], now, deadline_ms)]
        else:
            # Each shard on its own thread: one slow or failing shard holds back no other.
            with ThreadPoolExecutor(min(len(shards), TICK_THREADS), thread_name_prefix="tick") as pool:
                ticks = list(pool.map(lambda keys: self._tick_shard(keys, now, deadline_ms), shards))
            # A cluster client that meets a node gone refreshes its map of the cluster, and a
            # command another thread sends meanwhile can fail with it: each shard that failed is
            # tried once more, on its own, once the others are done.
            ticks = [self._tick_shard(keys, now, deadline_ms, tick) if tick.failed else tick
                     for keys, tick in zip(shards, ticks, strict=True)]
            self._note_layouts(now)
        failed = tuple(keys.head for keys, tick in zip(shards, ticks, strict=True) if tick.failed)
        out_of_time = any(tick.out_of_time for tick in ticks)
        return TickReport(
            sum(tick.reclaimed for tick in ticks), sum(tick.claimed for tick in ticks),
            sum(tick.send_failures for tick in ticks),
            self._queue.send_control("tick") if out_of_time else False, expired, failed,
        )

    def _tick_shard(self, keys: Keys, now: int, deadline_ms: int, before: _ShardTick | None = None,
                    ) -> _ShardTick:
        """Reclaim and claim one shard (adding to what a failed try `before` did); what is left
        when time runs out goes to the next tick (handed on through the queue)."""
        before = before or _ShardTick()
        reclaimed, claimed, failures = before.reclaimed, before.claimed, before.send_failures
        try:
            while True:
                count, more = self._store.reclaim_expired(now, self._batch, keys)
                reclaimed += count
                if not more or self._clock.now_ms() >= deadline_ms:
                    break
            while self._clock.now_ms() < deadline_ms:
                batch, more = self._store.claim_due(now + self.window_ms, self._settings.queue_grace_ms,
                                                    self._batch, keys=keys)
                claimed += len(batch)
                failed = self._handoff.send(batch) if batch else 0
                failures += failed
                if not more or failed:
                    # Done, or SQS is failing: what it did not take is reclaimed next tick.
                    return _ShardTick(reclaimed, claimed, failures)
        except PunctualError as exc:
            log.error("the tick could not claim shard %s: %s", keys.head, exc)
            return _ShardTick(reclaimed, claimed, failures, failed=True)
        return _ShardTick(reclaimed, claimed, failures, out_of_time=True)

    def _note_layouts(self, now: int) -> None:
        """Flag each older layout held or drained (shards.py), by what its shards hold now."""
        shards = self._store.shards
        try:
            for layout in shards.known()[1:]:
                self._store.note_layout(layout.count, self._store.holds_messages(layout.shards), now)
        except PunctualError as exc:
            log.warning("could not check the older shard layouts: %s", exc)
        shards.forget_registry()
