"""The Redis layer for agent runs: firing, the ready queue, attempts, reports. Lua in lua/agents/."""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .agent_store import AgentStore, PendingSlot
from .agents import DEFAULT_TIMEOUT_SECONDS, Agent
from .attempt_log import Attempt, encode_log
from .claims import Retry, new_token, run_ref
from .errors import Conflict, NotFound, PunctualError, Unauthorized
from .events import Audience
from .live_store import SCHEDULER_TOPIC, agent_topic
from .runs import Run, new_run_id
from .script_calls import BeginRun, FinishRun, Fire, Progress, RequeueStart, RunNow, StartReady
from .scripts import Refusals, hash_of, refuse
from .stats import STATS_TTL_SECONDS, run_field
from .store import Store


@dataclass(frozen=True)
class SlotFire:
    """A run whose message came due, and the slot that follows it (None: no schedule)."""

    agent_id: str
    run_id: str
    token: str
    next_slot_ms: int | None


@dataclass(frozen=True)
class Begun:
    """A run that is running under this dispatcher: what calling its agent needs."""

    agent: Agent
    run: Run
    token: str
    callback_token: str
    audience: Audience | None = None  # who listens for its events, read as it began

    @property
    def lease_ms(self) -> int:
        """Until when it holds its concurrency slot: its start plus the agent's timeout."""
        return (self.run.started_ms or 0) + self.agent.timeout_seconds * 1000


@dataclass(frozen=True)
class Fired:
    """What firing one run did: 'running' (begun: `begun` says what to call), 'starting'
    (holds a slot under `token`, to be begun), 'waiting', 'skipped', 'stale' or 'none'."""

    outcome: str
    token: str
    begun: Begun | None = None


def new_callback_token() -> str:
    return secrets.token_urlsafe(24)


def _fired(answer: Any, token: str, callback_token: str) -> Fired:
    if isinstance(answer, list):  # ['running', run hash, agent hash, agent's subscribers, scheduler's]
        _, run, agent, subscribers, scheduler = answer
        audience = Audience(tuple(subscribers), bool(scheduler))
        begun = Begun(Agent(hash_of(agent)), Run.from_hash(hash_of(run)), token, callback_token, audience)
        return Fired("running", token, begun)
    return Fired(str(answer), token)


# What report_checks.lua answers for a report (or a dispatcher's outcome) it refuses.
REPORT_REFUSALS: Refusals = {
    0: (NotFound, "run not found: {run_id}"),
    -1: (Conflict, "the run has already finished: {run_id}"),
    -2: (Conflict, "the run is not running: {run_id}"),
    -3: (Unauthorized, "invalid callback token for this run: {run_id}"),
}
RUN_NOW_REFUSALS: Refusals = {
    0: (NotFound, "agent {agent_id!r} not found"),
    -1: (Conflict, "agent {agent_id!r} already has a run in progress"),
}


def report_error(code: int, run_id: str) -> PunctualError:
    error, message = REPORT_REFUSALS[code]
    return error(message.format(run_id=run_id))


class RunStore:
    def __init__(self, store: Store, agents: AgentStore) -> None:
        self._store = store
        self._agents = agents
        self.client = store.client
        self.keys = store.keys
        self.call = store.call

    def run_now(self, agent_id: str, now: int) -> str:
        k = self.keys
        run_id = new_run_id()
        result = self._store.script(RunNow(
            agent_key=k.agent(agent_id), run_key=k.run(run_id), ready_key=k.ready,
            recent_runs_key=k.runs_of(agent_id), agent_id=agent_id, run_id=run_id, now_ms=now,
        ))
        refuse(RUN_NOW_REFUSALS, result, agent_id=agent_id)
        return run_id

    def fire(
        self, fires: Sequence[SlotFire], now: int, retention: int, max_running: int, start_lease_ms: int,
        begin: bool,
    ) -> list[Fired]:
        """Runs' messages came due: fire each (one script each, in one round trip).

        A run that gets a concurrency slot is begun at once when `begin` (the caller calls its
        agent now), else left 'starting' for whoever calls it.
        """
        k = self.keys
        tokens = [new_token() for _ in fires]
        callback_tokens = [new_callback_token() if begin else "" for _ in fires]
        calls = []
        for fire, token, callback_token in zip(fires, tokens, callback_tokens, strict=True):
            next_id = new_run_id()
            calls.append(Fire(
                run_key=k.run(fire.run_id), agent_key=k.agent(fire.agent_id), due_key=k.due,
                inflight_key=k.inflight, ready_key=k.ready, recent_runs_key=k.runs_of(fire.agent_id),
                next_slot_key=k.run(next_id), running_key=k.running,
                agent_topic_key=k.ws_topic(agent_topic(fire.agent_id)),
                scheduler_topic_key=k.ws_topic(SCHEDULER_TOPIC), run_id=fire.run_id, claim_token=fire.token,
                now_ms=now, run_ref=run_ref(fire.agent_id, fire.run_id),
                next_slot_ms="" if fire.next_slot_ms is None else fire.next_slot_ms, next_slot_run_id=next_id,
                next_slot_ref=run_ref(fire.agent_id, next_id), retention_seconds=retention,
                max_running=max_running, start_lease_deadline_ms=start_lease_ms, start_claim_token=token,
                callback_token=callback_token, default_timeout_seconds=DEFAULT_TIMEOUT_SECONDS,
            ))
        answers = self.call(lambda: self._store.scripts.call_many(calls))
        return [_fired(*answer) for answer in zip(answers, tokens, callback_tokens, strict=True)]

    def start_ready(self, max_running: int, lease_deadline_ms: int) -> list[tuple[str, str]]:
        """Give waiting runs free concurrency slots; (run id, claim token) of each started."""
        k = self.keys
        started: list[tuple[str, str]] = []
        while True:
            def candidates() -> list[str]:
                free = max_running - int(self.client.zcard(k.running))
                return self.client.zrange(k.ready, 0, free - 1) if free > 0 else []

            run_ids = self.call(candidates)
            if not run_ids:
                return started
            flat = self._store.script(StartReady(
                ready_key=k.ready, running_key=k.running, run_keys=tuple(k.run(r) for r in run_ids),
                max_running=max_running, start_lease_deadline_ms=lease_deadline_ms,
                runs=tuple((run_id, new_token()) for run_id in run_ids),
            ))
            if not flat:
                return started
            started += list(zip(flat[::2], flat[1::2], strict=True))

    def begin_run(
        self, run_id: str, agent_id: str, token: str, now: int, lease_ms: int, callback_token: str
    ) -> Run | None:
        k = self.keys
        flat = self._store.script(BeginRun(
            run_key=k.run(run_id), agent_key=k.agent(agent_id), running_key=k.running, run_id=run_id,
            claim_token=token, now_ms=now, lease_deadline_ms=lease_ms, callback_token=callback_token,
        ))
        return Run.from_hash(hash_of(flat)) if flat else None

    def authorise_report(self, agent_id: str, run_id: str, token: str) -> Run:
        """Refuse a report before its body is read: unknown run, wrong token, finished run (in
        that order: a caller without the token learns nothing of the run's state).

        The scripts that record a report check again, atomically.
        """
        run = self.get_run(run_id)
        if run is None or run.agent_id != agent_id:
            raise report_error(0, run_id)
        expected = run.callback_token
        if not expected or not hmac.compare_digest(expected.encode(), token.encode()):
            raise report_error(-3, run_id)
        if run.status.finished:
            raise report_error(-1, run_id)
        return run

    def report_progress(self, agent_id: str, run_id: str, token: str, progress: dict[str, Any]) -> None:
        code = self._store.script(Progress(
            run_key=self.keys.run(run_id), agent_id=agent_id, token=token, progress_json=json.dumps(progress),
            token_kind="callback",
        ))
        refuse(REPORT_REFUSALS, code, run_id=run_id)

    def finish_run(
        self,
        run: Run,
        token: str,
        token_kind: str,
        outcome: str,
        now: int,
        error: str | None,
        retention: int,
        attempt: Attempt,
        retry: Retry | None = None,
    ) -> int:
        """Record how an attempt ended (in the run's attempt log and this minute's stats too);
        returns report_checks.lua's code (1: recorded)."""
        k = self.keys
        agent_id, run_id = run.agent_id, run.id
        # Only a run whose retries are spent takes the agent off its schedule.
        no_slot = PendingSlot(k.run(""), "", "")
        slot = self._agents.pending_slot(agent_id) if outcome == "failed" else no_slot
        code = self._store.script(FinishRun(
            run_key=k.run(run_id), agent_key=k.agent(agent_id), running_key=k.running,
            inflight_key=k.inflight, schedules_key=k.schedules, pending_slot_key=slot.key, due_key=k.due,
            paused_key=k.paused, stats_minute_key=k.stats_minute(now), agent_id=agent_id, token=token,
            run_id=run_id, outcome=outcome, now_ms=now,
            error_text=error or "", retention_seconds=retention, run_ref=run.ref,
            retry_due_ms=retry.claim.due_ms if retry else "",
            retry_claim_token=retry.claim.token if retry else "",
            inflight_deadline_ms=retry.inflight_deadline_ms if retry else 0,
            pending_slot_run_id=slot.run_id, pending_slot_ref=slot.ref, token_kind=token_kind,
            attempt_log=encode_log((*run.attempt_log, attempt)),
            stats_field=run_field(outcome, token_kind == "lease"), stats_ttl_seconds=STATS_TTL_SECONDS,
        ))
        return int(code)

    def get_run(self, run_id: str) -> Run | None:
        fields = self.call(lambda: self.client.hgetall(self.keys.run(run_id)))
        return Run.from_hash(fields) if fields else None

    def recent_runs(self, agent_id: str, limit: int) -> list[Run]:
        def read() -> list[dict[str, str]]:
            run_ids = self.client.zrevrange(self.keys.runs_of(agent_id), 0, limit - 1)
            pipe = self.client.pipeline(transaction=False)
            for run_id in run_ids:
                pipe.hgetall(self.keys.run(run_id))
            return [f for f in pipe.execute() if f]

        return [Run.from_hash(fields) for fields in self.call(read)]

    def expired_runs(self, now: int, batch: int) -> list[str]:
        running = self.keys.running
        return self.call(lambda: self.client.zrangebyscore(running, "-inf", now, start=0, num=batch))

    def requeue_start(self, run_id: str, now: int) -> bool:
        k = self.keys
        return bool(self._store.script(RequeueStart(
            run_key=k.run(run_id), running_key=k.running, ready_key=k.ready, run_id=run_id, now_ms=now
        )))
