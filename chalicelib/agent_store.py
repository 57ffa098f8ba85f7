"""The Redis layer for agents, schedules and runs. Multi-key changes are Lua in lua/agents/."""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .agents import DEFAULT_TIMEOUT_SECONDS, FINISHED_RUNS, Agent, ScheduleRequest, new_run_id
from .errors import BadRequest, Conflict, NotFound, Unauthorized
from .events import Audience
from .keys import run_ref
from .live_store import SCHEDULER_TOPIC, agent_topic
from .store import Claimed, Page, Store, new_token

# isRunning is true while the per-minute tick has been seen this recently.
HEARTBEAT_MS = 150_000


@dataclass(frozen=True)
class Stats:
    scheduled: int
    running: int
    queued: int
    paused: int
    last_tick_ms: int | None


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
    run: dict[str, str]
    token: str
    callback_token: str
    audience: Audience | None = None  # who listens for its events, read as it began

    @property
    def lease_ms(self) -> int:
        """Until when it holds its concurrency slot: its start plus the agent's timeout."""
        return int(self.run["startedAt"]) + self.agent.timeout_seconds * 1000


@dataclass(frozen=True)
class Fired:
    """What firing one run did: 'running' (begun: `begun` says what to call), 'starting'
    (holds a slot under `token`, to be begun), 'waiting', 'skipped', 'stale' or 'none'."""

    outcome: str
    token: str
    begun: Begun | None = None


def new_callback_token() -> str:
    return secrets.token_urlsafe(24)


def _flat(fields: dict[str, str]) -> list[str]:
    return [x for pair in fields.items() for x in pair]


def _hash_of(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _fired(answer: Any, token: str, callback_token: str) -> Fired:
    if isinstance(answer, list):  # ['running', run hash, agent hash, agent's subscribers, scheduler's]
        _, run, agent, subscribers, scheduler = answer
        audience = Audience(tuple(subscribers), bool(scheduler))
        begun = Begun(Agent(_hash_of(agent)), _hash_of(run), token, callback_token, audience)
        return Fired("running", token, begun)
    return Fired(str(answer), token)


_REPORT_ERRORS = {
    0: NotFound("run not found"),
    -1: Conflict("the run has already finished"),
    -2: Conflict("the run is not running"),
    -3: Unauthorized("invalid callback token for this run"),
}


def report_error(code: int, run_id: str) -> Exception:
    err = _REPORT_ERRORS[code]
    return type(err)(f"{err.message}: {run_id}")


class AgentStore:
    def __init__(self, store: Store) -> None:
        self._store = store
        self.client = store.client
        self.keys = store.keys
        self._scripts = store.scripts
        self.call = store.call

    def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return self.call(lambda: self._scripts.run(f"agents/{name}", keys, args))

    def _pending_slot(self, agent_id: str) -> tuple[list[str], list[str]]:
        """The agent's pending cron slot as the extra (KEYS, ARGV) of a script that cancels it.

        Read before the script; the script drops the slot only if it is still the agent's.
        """
        slot = self.call(lambda: self.client.hget(self.keys.agent(agent_id), "slotRun")) or ""
        ref = run_ref(agent_id, slot) if slot else ""
        return [self.keys.run(slot), self.keys.due], [slot, ref]

    # -- agents -----------------------------------------------------------

    def create(self, agent_id: str, fields: dict[str, str], now: int) -> Agent:
        k = self.keys
        if not self._script("create", [k.agent(agent_id), k.agents], [agent_id, now, *_flat(fields)]):
            raise Conflict(f"agent {agent_id!r} already exists")
        return self.get(agent_id)

    def update(self, agent_id: str, fields: dict[str, str], now: int) -> Agent:
        if not self._script("update", [self.keys.agent(agent_id)], [now, *_flat(fields)]):
            raise NotFound(f"agent {agent_id!r} not found")
        return self.get(agent_id)

    def move_slot(self, agent: Agent, next_ms: int, now: int) -> None:
        """Move the agent's pending cron slot to `next_ms` (its time zone changed)."""
        k = self.keys
        slot_keys, slot_args = self._pending_slot(agent.id)
        run_id = new_run_id()
        self._script(
            "move_slot", [k.agent(agent.id), k.due, k.run(run_id), slot_keys[0]],
            [agent.id, now, *slot_args, next_ms, run_id, run_ref(agent.id, run_id)],
        )

    def find(self, agent_id: str) -> Agent | None:
        fields = self.call(lambda: self.client.hgetall(self.keys.agent(agent_id)))
        return Agent(fields) if fields else None

    def get(self, agent_id: str) -> Agent:
        agent = self.find(agent_id)
        if agent is None:
            raise NotFound(f"agent {agent_id!r} not found")
        return agent

    def delete(self, agent_id: str) -> None:
        k = self.keys
        slot_keys, slot_args = self._pending_slot(agent_id)
        result = self._script(
            "delete", [k.agent(agent_id), k.agents, k.schedules, k.paused, k.runs_of(agent_id), *slot_keys],
            [agent_id, *slot_args],
        )
        if result == 0:
            raise NotFound(f"agent {agent_id!r} not found")
        if result == -1:
            raise Conflict(f"agent {agent_id!r} has a run in progress; delete it when the run ends")

    def page(self, limit: int, cursor: str | None) -> tuple[Page, list[Agent]]:
        page = self._store.page(self.keys.agents, limit, cursor)

        def read() -> list[dict[str, str]]:
            pipe = self.client.pipeline(transaction=False)
            for agent_id, _ in page.items:
                pipe.hgetall(self.keys.agent(agent_id))
            return pipe.execute()

        return page, [Agent(f) for f in self.call(read) if f]

    # -- schedules ----------------------------------------------------------

    def set_schedule(self, agent: Agent, request: ScheduleRequest, next_ms: int, now: int) -> None:
        k = self.keys
        run_id = new_run_id()
        slot_keys, slot_args = self._pending_slot(agent.id)
        ok = self._script(
            "schedule_set",
            [k.agent(agent.id), k.schedules, k.paused, k.due, k.run(run_id), slot_keys[0]],
            [agent.id, now, request.cron_expression, int(request.priority),
             "1" if request.enabled else "0", request.job_id or agent.id, request.timezone or "",
             next_ms, run_id, run_ref(agent.id, run_id), *slot_args],
        )
        if not ok:
            raise NotFound(f"agent {agent.id!r} not found")

    def delete_schedule(self, agent_id: str, now: int) -> None:
        k = self.keys
        slot_keys, slot_args = self._pending_slot(agent_id)
        result = self._script(
            "schedule_delete", [k.agent(agent_id), k.schedules, k.paused, *slot_keys],
            [agent_id, now, *slot_args],
        )
        if result == 0:
            raise NotFound(f"agent {agent_id!r} not found")
        if result == -1:
            raise NotFound(f"agent {agent_id!r} has no schedule")

    def pause(self, agent_id: str, job_id: str, now: int) -> None:
        k = self.keys
        slot_keys, slot_args = self._pending_slot(agent_id)
        result = self._script(
            "pause", [k.agent(agent_id), k.paused, *slot_keys], [agent_id, job_id, now, *slot_args]
        )
        if result == 0:
            raise NotFound(f"agent {agent_id!r} not found")
        if result == -1:
            raise NotFound(f"no scheduled task {job_id!r} for agent {agent_id!r}")
        if result == -2:
            raise Conflict(f"job {job_id!r} is already paused")
        if result == -3:
            raise Conflict(f"cannot pause agent {agent_id!r} while it is running")

    def resume(self, agent_id: str, job_id: str, now: int, next_ms: int) -> None:
        k = self.keys
        run_id = new_run_id()
        result = self._script(
            "resume", [k.agent(agent_id), k.paused, k.due, k.run(run_id)],
            [agent_id, job_id, now, next_ms, run_id, run_ref(agent_id, run_id)],
        )
        if result == 0:
            raise NotFound(f"agent {agent_id!r} not found")
        if result == -1:
            raise NotFound(f"no scheduled task {job_id!r} for agent {agent_id!r}")
        if result == -2:
            raise BadRequest(f"job {job_id!r} is not paused")

    # -- runs -----------------------------------------------------------------

    def run_now(self, agent_id: str, now: int) -> str:
        k = self.keys
        run_id = new_run_id()
        result = self._script(
            "run_now", [k.agent(agent_id), k.run(run_id), k.ready, k.runs_of(agent_id)],
            [agent_id, run_id, now],
        )
        if result == 0:
            raise NotFound(f"agent {agent_id!r} not found")
        if result == -1:
            raise Conflict(f"agent {agent_id!r} already has a run in progress")
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
            calls.append((
                [k.run(fire.run_id), k.agent(fire.agent_id), k.due, k.inflight, k.ready,
                 k.runs_of(fire.agent_id), k.run(next_id), k.running,
                 k.ws_topic(agent_topic(fire.agent_id)), k.ws_topic(SCHEDULER_TOPIC)],
                [fire.run_id, fire.token, now, run_ref(fire.agent_id, fire.run_id),
                 "" if fire.next_slot_ms is None else fire.next_slot_ms, next_id,
                 run_ref(fire.agent_id, next_id), retention, max_running, start_lease_ms, token,
                 callback_token, DEFAULT_TIMEOUT_SECONDS],
            ))
        answers = self.call(lambda: self._scripts.run_many("agents/fire", calls)) if fires else []
        return [_fired(*answer) for answer in zip(answers, tokens, callback_tokens, strict=True)]

    def find_many(self, agent_ids: Iterable[str]) -> dict[str, Agent]:
        """The agents that exist among `agent_ids`, read in one round trip."""
        ids = list(dict.fromkeys(agent_ids))

        def read() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for agent_id in ids:
                pipe.hgetall(self.keys.agent(agent_id))
            return pipe.execute()

        rows = self.call(read) if ids else []
        return {agent_id: Agent(fields) for agent_id, fields in zip(ids, rows, strict=True) if fields}

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
            args: list[Any] = [max_running, lease_deadline_ms]
            for run_id in run_ids:
                args += [run_id, new_token()]
            flat = self._script("start_ready", [k.ready, k.running, *(k.run(r) for r in run_ids)], args)
            if not flat:
                return started
            started += list(zip(flat[::2], flat[1::2], strict=True))

    def begin_run(
        self, run_id: str, agent_id: str, token: str, now: int, lease_ms: int, callback_token: str
    ) -> dict[str, str] | None:
        k = self.keys
        flat = self._script(
            "begin_run", [k.run(run_id), k.agent(agent_id), k.running],
            [run_id, token, now, lease_ms, callback_token],
        )
        return _hash_of(flat) if flat else None

    def authorise_report(self, agent_id: str, run_id: str, token: str) -> None:
        """Refuse a report before its body is read: unknown run, wrong token, finished run (in
        that order: a caller without the token learns nothing of the run's state).

        The scripts that record a report check again, atomically.
        """
        run = self.get_run(run_id)
        if run is None or run.get("agentId") != agent_id:
            raise report_error(0, run_id)
        expected = run.get("callbackToken", "")
        if not expected or not hmac.compare_digest(expected.encode(), token.encode()):
            raise report_error(-3, run_id)
        if run.get("status") in FINISHED_RUNS:
            raise report_error(-1, run_id)

    def report_progress(self, agent_id: str, run_id: str, token: str, progress: dict[str, Any]) -> None:
        code = self._script(
            "progress", [self.keys.run(run_id)], [agent_id, token, json.dumps(progress), "callback"]
        )
        if code != 1:
            raise report_error(code, run_id)

    def finish_run(
        self,
        agent_id: str,
        run_id: str,
        token: str,
        token_kind: str,
        outcome: str,
        now: int,
        error: str | None,
        retention: int,
        retry: Claimed | None = None,
        inflight_deadline_ms: int = 0,
    ) -> int:
        k = self.keys
        # Only a run whose retries are spent takes the agent off its schedule.
        no_slot: tuple[list[str], list[str]] = ([k.run(""), k.due], ["", ""])
        slot_keys, slot_args = self._pending_slot(agent_id) if outcome == "failed" else no_slot
        code = self._script(
            "finish_run",
            [k.run(run_id), k.agent(agent_id), k.running, k.inflight, k.schedules, *slot_keys, k.paused],
            [agent_id, token, run_id, outcome, now, error or "", retention, run_ref(agent_id, run_id),
             retry.due_ms if retry else "", retry.token if retry else "", inflight_deadline_ms, *slot_args,
             token_kind],
        )
        return int(code)

    def get_run(self, run_id: str) -> dict[str, str] | None:
        fields = self.call(lambda: self.client.hgetall(self.keys.run(run_id)))
        return fields or None

    def recent_runs(self, agent_id: str, limit: int) -> list[dict[str, str]]:
        def read() -> list[dict[str, str]]:
            run_ids = self.client.zrevrange(self.keys.runs_of(agent_id), 0, limit - 1)
            pipe = self.client.pipeline(transaction=False)
            for run_id in run_ids:
                pipe.hgetall(self.keys.run(run_id))
            return [f for f in pipe.execute() if f]

        return self.call(read)

    def expedite(self, items: list[Claimed], now: int) -> None:
        self._store.expedite(items, now)

    def expired_runs(self, now: int, batch: int) -> list[str]:
        running = self.keys.running
        return self.call(lambda: self.client.zrangebyscore(running, "-inf", now, start=0, num=batch))

    def requeue_start(self, run_id: str, now: int) -> bool:
        k = self.keys
        return bool(self._script("requeue_start", [k.run(run_id), k.running, k.ready], [run_id, now]))

    # -- the scheduler's state ------------------------------------------------

    def beat(self, now: int) -> None:
        self.call(lambda: self.client.set(self.keys.tick_heartbeat, now))

    def stats(self) -> Stats:
        k = self.keys

        def read() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.scard(k.schedules).zcard(k.running).zcard(k.ready).scard(k.paused).get(k.tick_heartbeat)
            return pipe.execute()

        scheduled, running, queued, paused, last = self.call(read)
        return Stats(scheduled, running, queued, paused, int(last) if last else None)

    def scheduler_stats(self, max_concurrent: int, now: int) -> dict[str, Any]:
        """The spec's scheduler statistics."""
        stats = self.stats()
        alive = stats.last_tick_ms is not None and now - stats.last_tick_ms <= HEARTBEAT_MS
        return {
            "isRunning": alive,
            "scheduledTasksCount": stats.scheduled,
            "runningAgentsCount": stats.running,
            "queuedTasksCount": stats.queued,
            "maxConcurrentAgents": max_concurrent,
            "pausedJobsCount": stats.paused,
        }

    def paused_jobs(self) -> list[dict[str, str]]:
        def read() -> list[dict[str, str]]:
            agent_ids = sorted(self.client.smembers(self.keys.paused))
            pipe = self.client.pipeline(transaction=False)
            for agent_id in agent_ids:
                pipe.hget(self.keys.agent(agent_id), "jobId")
            return [
                {"agentId": agent_id, "jobId": job_id or agent_id}
                for agent_id, job_id in zip(agent_ids, pipe.execute(), strict=True)
            ]

        return self.call(read)
