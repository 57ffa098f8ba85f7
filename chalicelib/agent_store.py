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
from .script_calls import (
    CreateAgent,
    DeleteAgent,
    DeleteSchedule,
    MoveSlot,
    Pause,
    Resume,
    SetSchedule,
    UpdateAgent,
)
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


@dataclass(frozen=True)
class PendingSlot:
    """An agent's pending cron slot as a script that may cancel it takes it ('' ids: none)."""

    key: str
    run_id: str
    ref: str


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
        self.call = store.call

    def pending_slot(self, agent_id: str) -> PendingSlot:
        """The agent's pending cron slot, for a script that cancels it.

        Read before the script; the script drops the slot only if it is still the agent's.
        """
        slot = self.call(lambda: self.client.hget(self.keys.agent(agent_id), "slotRun")) or ""
        return PendingSlot(self.keys.run(slot), slot, run_ref(agent_id, slot) if slot else "")

    # -- agents -----------------------------------------------------------

    def create(self, agent_id: str, fields: dict[str, str], now: int) -> Agent:
        k = self.keys
        created = self._store.script(CreateAgent(
            agent_key=k.agent(agent_id), agents_key=k.agents, agent_id=agent_id, now_ms=now,
            fields=tuple(fields.items()),
        ))
        refuse(CREATE_REFUSALS, created, agent_id=agent_id)
        return self.get(agent_id)

    def update(self, agent_id: str, fields: dict[str, str], now: int) -> Agent:
        updated = self._store.script(UpdateAgent(
            agent_key=self.keys.agent(agent_id), now_ms=now, fields=tuple(fields.items())
        ))
        refuse(NO_AGENT, updated, agent_id=agent_id)
        return self.get(agent_id)

    def move_slot(self, agent: Agent, next_ms: int, now: int) -> None:
        """Move the agent's pending cron slot to `next_ms` (its time zone changed)."""
        k = self.keys
        slot = self.pending_slot(agent.id)
        run_id = new_run_id()
        self._store.script(MoveSlot(
            agent_key=k.agent(agent.id), due_key=k.due, next_slot_key=k.run(run_id),
            pending_slot_key=slot.key, agent_id=agent.id, now_ms=now, pending_slot_run_id=slot.run_id,
            pending_slot_ref=slot.ref,
            next_slot_ms=next_ms, next_slot_run_id=run_id, next_slot_ref=run_ref(agent.id, run_id),
        ))

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
        slot = self.pending_slot(agent_id)
        result = self._store.script(DeleteAgent(
            agent_key=k.agent(agent_id), agents_key=k.agents, schedules_key=k.schedules, paused_key=k.paused,
            recent_runs_key=k.runs_of(agent_id), pending_slot_key=slot.key, due_key=k.due, agent_id=agent_id,
            pending_slot_run_id=slot.run_id, pending_slot_ref=slot.ref,
        ))
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
        slot = self.pending_slot(agent.id)
        ok = self._store.script(SetSchedule(
            agent_key=k.agent(agent.id), schedules_key=k.schedules, paused_key=k.paused, due_key=k.due,
            next_slot_key=k.run(run_id), pending_slot_key=slot.key, agent_id=agent.id, now_ms=now,
            cron_expression=request.cron_expression, priority=int(request.priority),
            enabled="1" if request.enabled else "0", job_id=request.job_id or agent.id,
            schedule_timezone=request.timezone or "", next_slot_ms=next_ms, next_slot_run_id=run_id,
            next_slot_ref=run_ref(agent.id, run_id), pending_slot_run_id=slot.run_id,
            pending_slot_ref=slot.ref,
        ))
        refuse(NO_AGENT, ok, agent_id=agent.id)

    def delete_schedule(self, agent_id: str, now: int) -> None:
        k = self.keys
        slot = self.pending_slot(agent_id)
        result = self._store.script(DeleteSchedule(
            agent_key=k.agent(agent_id), schedules_key=k.schedules, paused_key=k.paused,
            pending_slot_key=slot.key, due_key=k.due, agent_id=agent_id, now_ms=now,
            pending_slot_run_id=slot.run_id, pending_slot_ref=slot.ref,
        ))
        refuse(UNSCHEDULE_REFUSALS, result, agent_id=agent_id)

    def pause(self, agent_id: str, job_id: str, now: int) -> None:
        k = self.keys
        slot = self.pending_slot(agent_id)
        result = self._store.script(Pause(
            agent_key=k.agent(agent_id), paused_key=k.paused, pending_slot_key=slot.key, due_key=k.due,
            agent_id=agent_id, job_id=job_id, now_ms=now, pending_slot_run_id=slot.run_id,
            pending_slot_ref=slot.ref,
        ))
        refuse(PAUSE_REFUSALS, result, agent_id=agent_id, job_id=job_id)

    def resume(self, agent_id: str, job_id: str, now: int, next_ms: int) -> None:
        k = self.keys
        run_id = new_run_id()
        result = self._store.script(Resume(
            agent_key=k.agent(agent_id), paused_key=k.paused, due_key=k.due, next_slot_key=k.run(run_id),
            agent_id=agent_id, job_id=job_id, now_ms=now, next_slot_ms=next_ms, next_slot_run_id=run_id,
            next_slot_ref=run_ref(agent_id, run_id),
        ))
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
