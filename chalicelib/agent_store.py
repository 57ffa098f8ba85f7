"""The Redis layer for agents, their schedules and the scheduler's own state. Multi-key changes
are Lua in lua/agents/; runs are run_store.py's."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .agents import Agent, ScheduleRequest
from .claims import run_ref
from .errors import BadRequest, Conflict, NotFound
from .runs import new_run_id
from .scripts import Refusals, refuse
from .store import Page, Store

# isRunning is true while the per-minute tick has been seen this recently.
HEARTBEAT_MS = 150_000


@dataclass(frozen=True)
class Stats:
    scheduled: int
    running: int
    queued: int
    paused: int
    last_tick_ms: int | None


def _flat(fields: dict[str, str]) -> list[str]:
    return [x for pair in fields.items() for x in pair]


CREATE_REFUSALS: Refusals = {0: (Conflict, "agent {agent_id!r} already exists")}
NO_AGENT: Refusals = {0: (NotFound, "agent {agent_id!r} not found")}
DELETE_REFUSALS: Refusals = {
    **NO_AGENT,
    -1: (Conflict, "agent {agent_id!r} has a run in progress; delete it when the run ends"),
}
UNSCHEDULE_REFUSALS: Refusals = {**NO_AGENT, -1: (NotFound, "agent {agent_id!r} has no schedule")}
_NO_JOB = (NotFound, "no scheduled task {job_id!r} for agent {agent_id!r}")
PAUSE_REFUSALS: Refusals = {
    **NO_AGENT,
    -1: _NO_JOB,
    -2: (Conflict, "job {job_id!r} is already paused"),
    -3: (Conflict, "cannot pause agent {agent_id!r} while it is running"),
}
RESUME_REFUSALS: Refusals = {**NO_AGENT, -1: _NO_JOB, -2: (BadRequest, "job {job_id!r} is not paused")}


class AgentStore:
    def __init__(self, store: Store) -> None:
        self._store = store
        self.client = store.client
        self.keys = store.keys
        self.scripts = store.scripts
        self.call = store.call

    def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return self.call(lambda: self.scripts.run(f"agents/{name}", keys, args))

    def pending_slot(self, agent_id: str) -> tuple[list[str], list[str]]:
        """The agent's pending cron slot as the extra (KEYS, ARGV) of a script that cancels it.

        Read before the script; the script drops the slot only if it is still the agent's.
        """
        slot = self.call(lambda: self.client.hget(self.keys.agent(agent_id), "slotRun")) or ""
        ref = run_ref(agent_id, slot) if slot else ""
        return [self.keys.run(slot), self.keys.due], [slot, ref]

    # -- agents -----------------------------------------------------------

    def create(self, agent_id: str, fields: dict[str, str], now: int) -> Agent:
        k = self.keys
        created = self._script("create", [k.agent(agent_id), k.agents], [agent_id, now, *_flat(fields)])
        refuse(CREATE_REFUSALS, created, agent_id=agent_id)
        return self.get(agent_id)

    def update(self, agent_id: str, fields: dict[str, str], now: int) -> Agent:
        updated = self._script("update", [self.keys.agent(agent_id)], [now, *_flat(fields)])
        refuse(NO_AGENT, updated, agent_id=agent_id)
        return self.get(agent_id)

    def move_slot(self, agent: Agent, next_ms: int, now: int) -> None:
        """Move the agent's pending cron slot to `next_ms` (its time zone changed)."""
        k = self.keys
        slot_keys, slot_args = self.pending_slot(agent.id)
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
        slot_keys, slot_args = self.pending_slot(agent_id)
        result = self._script(
            "delete", [k.agent(agent_id), k.agents, k.schedules, k.paused, k.runs_of(agent_id), *slot_keys],
            [agent_id, *slot_args],
        )
        refuse(DELETE_REFUSALS, result, agent_id=agent_id)

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
        slot_keys, slot_args = self.pending_slot(agent.id)
        ok = self._script(
            "schedule_set",
            [k.agent(agent.id), k.schedules, k.paused, k.due, k.run(run_id), slot_keys[0]],
            [agent.id, now, request.cron_expression, int(request.priority),
             "1" if request.enabled else "0", request.job_id or agent.id, request.timezone or "",
             next_ms, run_id, run_ref(agent.id, run_id), *slot_args],
        )
        refuse(NO_AGENT, ok, agent_id=agent.id)

    def delete_schedule(self, agent_id: str, now: int) -> None:
        k = self.keys
        slot_keys, slot_args = self.pending_slot(agent_id)
        result = self._script(
            "schedule_delete", [k.agent(agent_id), k.schedules, k.paused, *slot_keys],
            [agent_id, now, *slot_args],
        )
        refuse(UNSCHEDULE_REFUSALS, result, agent_id=agent_id)

    def pause(self, agent_id: str, job_id: str, now: int) -> None:
        k = self.keys
        slot_keys, slot_args = self.pending_slot(agent_id)
        result = self._script(
            "pause", [k.agent(agent_id), k.paused, *slot_keys], [agent_id, job_id, now, *slot_args]
        )
        refuse(PAUSE_REFUSALS, result, agent_id=agent_id, job_id=job_id)

    def resume(self, agent_id: str, job_id: str, now: int, next_ms: int) -> None:
        k = self.keys
        run_id = new_run_id()
        result = self._script(
            "resume", [k.agent(agent_id), k.paused, k.due, k.run(run_id)],
            [agent_id, job_id, now, next_ms, run_id, run_ref(agent_id, run_id)],
        )
        refuse(RESUME_REFUSALS, result, agent_id=agent_id, job_id=job_id)

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
