"""Agent runs: slots firing, the concurrency limit, the HTTP call, reports, retries, timeouts."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from . import cron, observability
from .agent_store import AgentStore, Begun, SlotFire, new_callback_token, report_error
from .agents import Agent, RunStatus
from .backoff import retry_delay_seconds
from .clock import Clock
from .config import Settings
from .dispatch_queue import MAX_DELAY_SECONDS, DispatchQueue
from .events import Events
from .keys import run_ref, split_run_ref
from .store import Claimed, new_token
from .timeutil import format_instant
from .webhooks import DeliveryResult, HttpSender, webhook_headers

log = logging.getLogger(__name__)

# A start message that no dispatcher took within this long gives its slot back.
START_LEASE_MS = 60_000
EXPIRY_BATCH = 200
# Slots fired per round trip to Redis when many fall due at once (see fire_group). The first
# chunk is small: every invocation holding slots of the same second sends its first chunk at
# that instant, and Redis works through all of them before the last winner hears it won.
FIRST_FIRE_CHUNK = 5
FIRE_CHUNK = 20
# Once every concurrency slot is taken, the slots left to fire in a due second are fired this
# much later (see fire_group).
CALLS_FIRST_SECONDS = 0.2


class AgentRunner:
    def __init__(
        self,
        store: AgentStore,
        queue: DispatchQueue,
        sender: HttpSender,
        events: Events,
        clock: Clock,
        settings: Settings,
    ) -> None:
        self._store = store
        self._queue = queue
        self._sender = sender
        self._events = events
        self._clock = clock
        self._settings = settings

    # -- entry points from the dispatch queue -------------------------------

    def prepare_fires(self, items: list[Claimed]) -> dict[str, tuple[Agent | None, int | None]]:
        """Per run ref, its agent and the slot after it: worked out before the runs fall due, so
        the due instant itself costs one round trip to Redis."""
        agents = self._store.find_many(split_run_ref(item.ref)[0] for item in items)
        prepared: dict[str, tuple[Agent | None, int | None]] = {}
        for item in items:
            agent = agents.get(split_run_ref(item.ref)[0])
            prepared[item.ref] = (agent, _next_slot(agent, item.due_ms))
        return prepared

    def fire_group(
        self, items: list[Claimed], prepared: dict[str, tuple[Agent | None, int | None]], begin: bool
    ) -> Iterator[list[Begun | Claimed]]:
        """Fire runs due now together, a chunk per round trip; yields, chunk by chunk, what the
        caller is to call at once: the runs that took a free concurrency slot (begun already
        when `begin`, else start claims), and last the waiting ones the ready queue let through.

        Chunks, not one round trip for the whole group: the runs that win a slot are handed out
        as soon as their chunk has fired, not after every slot of the group; and once the slots
        are all taken, the rest fire a moment later, after the winners' calls.
        """
        self._clock.sleep_until(max(item.due_ms for item in items))
        waiting: set[str] = set()
        paused = False
        for chunk in _chunks(items):
            if waiting and not paused:
                paused = True
                # Every slot is taken, so the rest of these runs will only wait. Firing them is
                # several thousand scripts when a minute's slots fall due together: that much
                # Redis and CPU in the way of the runs that did get a slot (here or in other
                # containers) would make their calls late. They call first. Real time, not the
                # clock's: this orders work, it does not wait for an instant.
                time.sleep(CALLS_FIRST_SECONDS)
            starts, chunk_waiting = self._fire_chunk(chunk, prepared, begin)
            waiting |= chunk_waiting
            if starts:
                yield starts
        if waiting:
            self._events.counts_changed()  # queuedTasksCount, even if no slot is free for them
            claims = self.start_waiting(inline=waiting)
            if claims:
                yield list(claims)

    def _fire_chunk(
        self, items: list[Claimed], prepared: dict[str, tuple[Agent | None, int | None]], begin: bool
    ) -> tuple[list[Begun | Claimed], set[str]]:
        now = self._clock.now_ms()
        fires = []
        for item in items:
            agent_id, run_id = split_run_ref(item.ref)
            agent, next_slot = prepared[item.ref]
            if next_slot is not None and next_slot <= now:
                # Woken late: from now, so missed slots collapse into this one.
                next_slot = _next_slot(agent, now)
            fires.append(SlotFire(agent_id, run_id, item.token, next_slot))
        settings = self._settings
        # A run that gets a slot is begun in the same script, so its call goes out without
        # another round trip: on a busy second, each trip costs the winners tens of ms.
        outcomes = self._store.fire(fires, now, settings.retention_seconds, settings.max_concurrent_agents,
                                    now + START_LEASE_MS, begin)
        starts: list[Begun | Claimed] = []
        waiting: set[str] = set()
        for item, fire, fired in zip(items, fires, outcomes, strict=True):
            if fired.outcome == "skipped":  # the previous run still goes: recorded, not stacked
                observability.run(fire.agent_id, fire.run_id, "skipped", 1, now - item.due_ms)
            elif fired.begun is not None:
                starts.append(fired.begun)
            elif fired.outcome == "starting":
                starts.append(Claimed(item.ref, now, fired.token, kind="start"))
            elif fired.outcome == "waiting":
                waiting.add(fire.run_id)
            else:
                log.info("run %s of %s not fired: %s", fire.run_id, fire.agent_id, fired.outcome)
        # One line per chunk, not per run: a busy second fires thousands, and each run that
        # starts is logged when it does.
        log.info("fired %d run(s): %d to start now, %d waiting for a slot", len(items), len(starts),
                 len(waiting))
        return starts, waiting

    def start(self, claimed: Claimed) -> list[Claimed]:
        """A start message: this dispatcher calls the agent. Returns the waiting runs this
        dispatcher is to start next (see call)."""
        agent_id, run_id = split_run_ref(claimed.ref)
        return self.execute(agent_id, run_id, claimed.token)

    def check_timeout(self, claimed: Claimed) -> list[Claimed]:
        """A run's timeout came: fail it if it is still running on the same attempt. Returns the
        waiting run this dispatcher is to start in its place, if any."""
        self._clock.sleep_until(claimed.due_ms)
        agent_id, run_id = split_run_ref(claimed.ref)
        run = self._store.get_run(run_id)
        if run and run.get("status") == RunStatus.RUNNING and run.get("token") == claimed.token:
            return self._timed_out(agent_id, run_id, run, keep=1)
        return []

    # -- the ready queue -------------------------------------------------------

    def start_waiting(self, inline: set[str] | None = None, keep: int = 0) -> list[Claimed]:
        """Start waiting runs while concurrency allows.

        Runs this dispatcher is already handling (`inline`), and up to `keep` others, come back
        for it to call right away, so a slot starts on its second; the rest are handed to SQS
        for other dispatchers.
        """
        lease = self._clock.now_ms() + START_LEASE_MS
        started = self._store.start_ready(self._settings.max_concurrent_agents, lease)
        mine: list[Claimed] = []
        others = []
        for run_id, token in started:
            run = self._store.get_run(run_id)
            if run is None:
                continue
            claimed = Claimed(run_ref(run["agentId"], run_id), self._clock.now_ms(), token, kind="start")
            if inline and run_id in inline:
                mine.append(claimed)
            elif keep > 0:
                keep -= 1
                mine.append(claimed)
            else:
                others.append(claimed)
        if others:
            failed = self._queue.send(others)
            if failed:
                log.warning("%d start message(s) not sent; their lease will requeue them", len(failed))
        return mine

    def heartbeat_and_expire(self, now: int) -> int:
        """The tick's share: mark the scheduler alive, requeue lost starts, fail runs past their timeout."""
        self._store.beat(now)
        count = requeued = 0
        for run_id in self._store.expired_runs(now, EXPIRY_BATCH):
            run = self._store.get_run(run_id)
            if run is None:
                continue
            if run.get("status") == RunStatus.STARTING:
                requeued += self._store.requeue_start(run_id, now)
            elif run.get("status") == RunStatus.RUNNING:
                self._timed_out(run["agentId"], run_id, run)
                count += 1
        if requeued:
            self._events.counts_changed()  # a lost start left running for waiting
        # Always, not only when something expired here: a dispatcher that died
        # between marking a run waiting and starting it leaves a ready queue that
        # nothing else would ever drain. Cheap when nothing is ready.
        self.start_waiting()
        return count + requeued

    # -- one attempt --------------------------------------------------------------

    def execute(self, agent_id: str, run_id: str, token: str) -> list[Claimed]:
        agent = self._store.find(agent_id)
        if agent is None:
            return []
        now = self._clock.now_ms()
        callback_token = new_callback_token()
        lease = now + agent.timeout_seconds * 1000
        run = self._store.begin_run(run_id, agent_id, token, now, lease, callback_token)
        if run is None:
            log.info("nothing to start for run %s (duplicate or superseded)", run_id)
            return []
        return self.call(Begun(agent, run, token, callback_token))

    def call(self, begun: Begun) -> list[Claimed]:
        """Call the agent of a begun run, and record what its answer means.

        Returns the waiting run (as a start claim) that takes the slot this run freed: this
        dispatcher, free now, calls it next, rather than handing it through SQS to another.
        """
        agent, run, token = begun.agent, begun.run, begun.token
        agent_id, run_id = agent.id, run["runId"]
        job_id = run.get("jobId") or agent_id
        self._events.started(agent_id, job_id, begun.audience)
        observability.run(agent_id, run_id, "started", _attempt(run), _lateness(run))
        result = self._call(agent, run, begun.callback_token)
        if result.status_code == 202:
            # The agent works on and reports back. Its timeout is checked on time
            # through SQS when SQS can hold the check that long; else by the tick.
            if agent.timeout_seconds <= MAX_DELAY_SECONDS:
                self._queue.send([Claimed(run_ref(agent_id, run_id), begun.lease_ms, token, kind="timeout")])
            return []
        if result.ok:
            return self._complete(agent_id, run_id, token, "claim", run, keep=1)
        # Every failed answer is retried (4xx too); a refused endpoint would be refused
        # the same way again, so that attempt fails for good, as a webhook does.
        return self._fail(agent_id, run_id, token, "claim", run, result.error or "failed",
                          retryable=not result.refused, keep=1)

    def _call(self, agent: Agent, run: dict[str, str], callback_token: str) -> DeliveryResult:
        body = json.dumps({
            "agentId": agent.id,
            "jobId": run.get("jobId") or agent.id,
            "runId": run["runId"],
            "scheduledFor": _iso(run.get("scheduledFor")),
            "attempt": int(run.get("attempt") or 1),
            "callbackUrl": f"{self._settings.public_api_url}/api/agents/{agent.id}/runs/{run['runId']}",
            "callbackToken": callback_token,
        }).encode()
        headers = webhook_headers(run["runId"], self._clock.now_ms() // 1000, body,
                                  self._settings.webhook_secret)
        timeout = min(agent.timeout_seconds, self._settings.agent_call_timeout_seconds)
        return self._sender.post(agent.fields["endpointUrl"], body, headers, "endpointUrl", timeout=timeout)

    # -- outcomes (from the call, the agent's reports, or a timeout) -----------------

    def report_progress(self, agent_id: str, run_id: str, token: str, report: dict[str, Any]) -> None:
        self._store.report_progress(agent_id, run_id, token, report)
        run = self._store.get_run(run_id) or {}
        self._events.progress(agent_id, run.get("jobId") or agent_id, report)

    def report_complete(self, agent_id: str, run_id: str, token: str) -> None:
        run = self._store.get_run(run_id) or {}
        self._complete(agent_id, run_id, token, "callback", run, raise_errors=True)

    def report_fail(self, agent_id: str, run_id: str, token: str, error: str) -> None:
        run = self._store.get_run(run_id) or {}
        self._fail(agent_id, run_id, token, "callback", run, error, raise_errors=True)

    def _timed_out(self, agent_id: str, run_id: str, run: dict[str, str], keep: int = 0) -> list[Claimed]:
        agent = self._store.find(agent_id)
        seconds = agent.timeout_seconds if agent else 0
        # "lease": only while its lease has passed; the run read may be a newer attempt's.
        return self._fail(agent_id, run_id, run.get("token", ""), "lease", run,
                          f"timed out after {seconds} s without an answer", keep=keep)

    # A finished run frees its slot; the waiting run that takes it is returned for the caller to
    # start when `keep` (a dispatcher), else handed to SQS (an agent's report, the tick).

    def _complete(self, agent_id: str, run_id: str, token: str, kind: str, run: dict[str, str],
                  raise_errors: bool = False, keep: int = 0) -> list[Claimed]:
        now = self._clock.now_ms()
        code = self._store.finish_run(agent_id, run_id, token, kind, "completed", now, None,
                                      self._settings.retention_seconds)
        if self._settled(code, run_id, raise_errors):
            duration = now - int(run.get("startedAt") or now)
            self._events.completed(agent_id, run.get("jobId") or agent_id, duration)
            observability.run(agent_id, run_id, "completed", _attempt(run), _lateness(run), duration)
            return self.start_waiting(keep=keep)
        return []

    def _fail(self, agent_id: str, run_id: str, token: str, kind: str, run: dict[str, str], error: str,
              raise_errors: bool = False, retryable: bool = True, keep: int = 0) -> list[Claimed]:
        settings = self._settings
        now = self._clock.now_ms()
        attempt = _attempt(run)
        retry = None
        deadline = 0
        if retryable and attempt <= settings.agent_max_retries:
            delay = retry_delay_seconds(attempt, settings.agent_retry_base_seconds,
                                        settings.agent_retry_max_delay_seconds, None)
            retry = Claimed(run_ref(agent_id, run_id), now + int(delay * 1000), new_token())
            deadline = retry.due_ms + settings.queue_grace_seconds * 1000
        code = self._store.finish_run(agent_id, run_id, token, kind, "retry" if retry else "failed", now,
                                      error, settings.retention_seconds, retry, deadline)
        if self._settled(code, run_id, raise_errors):
            self._events.failed(agent_id, run.get("jobId") or agent_id, error)
            observability.run(agent_id, run_id, "retry" if retry else "failed", attempt, _lateness(run),
                              now - int(run.get("startedAt") or now), error)
            if retry is not None and self._queue.send([retry]):
                # Not sent: the next tick takes the retry up at once, not after the queue grace.
                self._store.expedite([retry], now)
            return self.start_waiting(keep=keep)
        return []

    @staticmethod
    def _settled(code: int, run_id: str, raise_errors: bool) -> bool:
        if code == 1:
            return True
        if raise_errors:
            raise report_error(code, run_id)
        log.info("outcome for run %s not recorded (code %d): already settled", run_id, code)
        return False


def _chunks(items: list[Claimed]) -> Iterator[list[Claimed]]:
    yield items[:FIRST_FIRE_CHUNK]
    for first in range(FIRST_FIRE_CHUNK, len(items), FIRE_CHUNK):
        yield items[first:first + FIRE_CHUNK]


def _next_slot(agent: Agent | None, after_ms: int) -> int | None:
    if agent is None or not agent.has_schedule:
        return None
    return cron.next_after(agent.fields["cron"], cron.zone(agent.timezone), after_ms)


def _attempt(run: dict[str, str]) -> int:
    return int(run.get("attempt") or 1)


def _lateness(run: dict[str, str]) -> int | None:
    """How late this attempt started after it was due."""
    if not run.get("startedAt") or not run.get("scheduledFor"):
        return None
    return int(float(run["startedAt"])) - int(float(run["scheduledFor"]))


def _iso(ms: str | None) -> str | None:
    return format_instant(int(float(ms))) if ms else None
