"""Agent runs: slots firing, the concurrency limit, the HTTP call, reports, retries, timeouts."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import observability
from .agent_store import AgentStore
from .agents import Agent
from .attempt_log import Attempt, AttemptKind
from .claims import Claimed, Retry, Step, plan_retry, split_run_ref
from .clock import Clock
from .config import Settings
from .dispatch_queue import MAX_DELAY_SECONDS, Handoff
from .events import Events
from .run_store import Begun, RunStore, SlotFire, new_callback_token, report_error
from .runs import Run, RunStatus
from .sender import DeliveryResult, HttpSender
from .standard_webhooks import webhook_headers
from .timeutil import format_instant

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


@dataclass(frozen=True)
class Fire:
    """A run about to fall due, worked out before it does: its agent (None: deleted since) and
    the cron slot after it (None: no schedule)."""

    agent: Agent | None
    next_slot_ms: int | None


Prepared = dict[str, Fire]  # per run ref


class AgentRunner:
    def __init__(
        self,
        agents: AgentStore,
        runs: RunStore,
        handoff: Handoff,
        sender: HttpSender,
        events: Events,
        clock: Clock,
        settings: Settings,
    ) -> None:
        self._agents = agents
        self._runs = runs
        self._handoff = handoff
        self._sender = sender
        self._events = events
        self._clock = clock
        self._settings = settings

    # -- entry points from the dispatch queue -------------------------------

    def prepare_fires(self, items: list[Claimed]) -> Prepared:
        """Per run ref, what firing it needs, worked out before the runs fall due, so the due
        instant itself costs one round trip to Redis."""
        agents = self._agents.find_many(split_run_ref(item.ref)[0] for item in items)
        prepared: Prepared = {}
        for item in items:
            agent = agents.get(split_run_ref(item.ref)[0])
            prepared[item.ref] = Fire(agent, agent.next_slot(item.due_ms) if agent else None)
        return prepared

    def fire_group(
        self, items: list[Claimed], prepared: Prepared, begin: bool
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
        self, items: list[Claimed], prepared: Prepared, begin: bool
    ) -> tuple[list[Begun | Claimed], set[str]]:
        now = self._clock.now_ms()
        fires = []
        for item in items:
            agent_id, run_id = split_run_ref(item.ref)
            agent, next_slot = prepared[item.ref].agent, prepared[item.ref].next_slot_ms
            if agent is not None and next_slot is not None and next_slot <= now:
                # Woken late: from now, so missed slots collapse into this one.
                next_slot = agent.next_slot(now)
            fires.append(SlotFire(agent_id, run_id, item.token, next_slot))
        settings = self._settings
        # A run that gets a slot is begun in the same script, so its call goes out without
        # another round trip: on a busy second, each trip costs the winners tens of ms.
        outcomes = self._runs.fire(fires, now, settings.retention_seconds, settings.max_concurrent_agents,
                                    now + START_LEASE_MS, begin)
        starts: list[Begun | Claimed] = []
        waiting: set[str] = set()
        for item, fire, fired in zip(items, fires, outcomes, strict=True):
            if fired.outcome == "skipped":  # the previous run still goes: recorded, not stacked
                observability.run(fire.agent_id, fire.run_id, "skipped", 1, now - item.due_ms)
            elif fired.begun is not None:
                starts.append(fired.begun)
            elif fired.outcome == "starting":
                starts.append(Claimed(item.ref, now, fired.token, Step.START))
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
        run = self._runs.get_run(split_run_ref(claimed.ref)[1])
        if run and run.status is RunStatus.RUNNING and run.token == claimed.token:
            return self._timed_out(run, keep=1)
        return []

    # -- the ready queue -------------------------------------------------------

    def start_waiting(self, inline: set[str] | None = None, keep: int = 0) -> list[Claimed]:
        """Start waiting runs while concurrency allows.

        Runs this dispatcher is already handling (`inline`), and up to `keep` others, come back
        for it to call right away, so a slot starts on its second; the rest are handed to SQS
        for other dispatchers.
        """
        lease = self._clock.now_ms() + START_LEASE_MS
        started = self._runs.start_ready(self._settings.max_concurrent_agents, lease)
        mine: list[Claimed] = []
        others = []
        for run_id, token in started:
            run = self._runs.get_run(run_id)
            if run is None:
                continue
            claimed = Claimed(run.ref, self._clock.now_ms(), token, Step.START)
            if inline and run_id in inline:
                mine.append(claimed)
            elif keep > 0:
                keep -= 1
                mine.append(claimed)
            else:
                others.append(claimed)
        if others:
            self._handoff.send(others)  # one not sent gives its slot back when its lease ends
        return mine

    def heartbeat_and_expire(self, now: int) -> int:
        """The tick's share: mark the scheduler alive, requeue lost starts, fail runs past their timeout."""
        self._agents.beat(now)
        count = requeued = 0
        for run_id in self._runs.expired_runs(now, EXPIRY_BATCH):
            run = self._runs.get_run(run_id)
            if run is None:
                continue
            if run.status is RunStatus.STARTING:
                requeued += self._runs.requeue_start(run_id, now)
            elif run.status is RunStatus.RUNNING:
                self._timed_out(run)
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
        agent = self._agents.find(agent_id)
        if agent is None:
            return []
        now = self._clock.now_ms()
        callback_token = new_callback_token()
        lease = now + agent.timeout_seconds * 1000
        run = self._runs.begin_run(run_id, agent_id, token, now, lease, callback_token)
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
        self._events.started(agent.id, run.job_id, begun.audience)
        observability.run(agent.id, run.id, "started", run.attempt, run.lateness_ms)
        result = self._call(agent, run, begun.callback_token)
        if result.status_code == 202:
            # The agent works on and reports back. Its timeout is checked on time
            # through SQS when SQS can hold the check that long; else by the tick.
            if agent.timeout_seconds <= MAX_DELAY_SECONDS:
                self._handoff.send([Claimed(run.ref, begun.lease_ms, token, Step.TIMEOUT)])
            return []
        if result.ok:
            return self._complete(run, token, "claim", keep=1, status=result.status_code)
        # Every failed answer is retried (4xx too); a refused endpoint would be refused
        # the same way again, so that attempt fails for good, as a webhook does.
        return self._fail(run, token, "claim", result.error or "failed", retryable=not result.refused, keep=1,
                          status=result.status_code)

    def _call(self, agent: Agent, run: Run, callback_token: str) -> DeliveryResult:
        body = json.dumps({
            "agentId": agent.id,
            "jobId": run.job_id,
            "runId": run.id,
            "scheduledFor": format_instant(run.scheduled_ms),
            "attempt": run.attempt,
            "callbackUrl": f"{self._settings.public_api_url}/api/agents/{agent.id}/runs/{run.id}",
            "callbackToken": callback_token,
        }).encode()
        secret = agent.webhook_secret or self._settings.webhook_secret  # its own, when it has one
        headers = webhook_headers(run.id, self._clock.now_ms() // 1000, body, secret)
        timeout = min(agent.timeout_seconds, self._settings.agent_call_timeout_seconds)
        return self._sender.post(agent.endpoint_url, body, headers, "endpointUrl", timeout=timeout)

    # -- outcomes (from the call, the agent's reports, or a timeout) -----------------
    # A report's run was read when its token was checked (RunStore.authorise_report).

    def report_progress(self, run: Run, token: str, report: dict[str, Any]) -> None:
        self._runs.report_progress(run.agent_id, run.id, token, report)
        self._events.progress(run.agent_id, run.job_id, run.id, report)

    def report_complete(self, run: Run, token: str) -> None:
        self._complete(run, token, "callback", raise_errors=True)

    def report_fail(self, run: Run, token: str, error: str) -> None:
        self._fail(run, token, "callback", error, raise_errors=True)

    def _timed_out(self, run: Run, keep: int = 0) -> list[Claimed]:
        agent = self._agents.find(run.agent_id)
        seconds = agent.timeout_seconds if agent else 0
        # "lease": only while its lease has passed; the run read may be a newer attempt's.
        error = f"timed out after {seconds} s without an answer"
        return self._fail(run, run.token, "lease", error, keep=keep)

    # A finished run frees its slot; the waiting run that takes it is returned for the caller to
    # start when `keep` (a dispatcher), else handed to SQS (an agent's report, the tick).

    def _complete(self, run: Run, token: str, token_kind: str, raise_errors: bool = False,
                  keep: int = 0, status: int | None = None) -> list[Claimed]:
        now = self._clock.now_ms()
        code = self._runs.finish_run(run, token, token_kind, "completed", now, None,
                                     self._settings.retention_seconds, _attempt(run, now, status, None, None))
        if self._settled(code, run.id, raise_errors):
            duration = run.ran_for_ms(now)
            self._events.completed(run.agent_id, run.job_id, duration, run.id)
            observability.run(run.agent_id, run.id, "completed", run.attempt, run.lateness_ms, duration)
            return self.start_waiting(keep=keep)
        return []

    def _fail(self, run: Run, token: str, token_kind: str, error: str, raise_errors: bool = False,
              retryable: bool = True, keep: int = 0, status: int | None = None) -> list[Claimed]:
        settings = self._settings
        now = self._clock.now_ms()
        retry = None
        if retryable:
            retry = plan_retry(run.ref, run.attempt, now, settings.agent_retries, settings.queue_grace_ms)
        attempt = _attempt(run, now, status, error, retry)
        code = self._runs.finish_run(run, token, token_kind, "retry" if retry else "failed", now, error,
                                     settings.retention_seconds, attempt, retry)
        if self._settled(code, run.id, raise_errors):
            self._events.failed(run.agent_id, run.job_id, error, run.id)
            observability.run(run.agent_id, run.id, "retry" if retry else "failed", run.attempt,
                              run.lateness_ms, run.ran_for_ms(now), error)
            if retry is not None:
                self._handoff.send([retry.claim])
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


def _attempt(run: Run, now: int, status: int | None, error: str | None, retry: Retry | None) -> Attempt:
    """A run attempt as its attempt log keeps it: from its start until `now`."""
    started = run.started_ms
    return Attempt(run.attempt, AttemptKind.DELIVERY, started if started is not None else now, status, error,
                   now - started if started is not None else None, retry.claim.due_ms if retry else None)


def _chunks(items: list[Claimed]) -> Iterator[list[Claimed]]:
    yield items[:FIRST_FIRE_CHUNK]
    for first in range(FIRST_FIRE_CHUNK, len(items), FIRE_CHUNK):
        yield items[first:first + FIRE_CHUNK]
