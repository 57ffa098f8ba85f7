"""Items on their way through SQS: what names them, what a claim on one carries, how they get there.

A *ref* names an item in the due and inflight indexes: `m:{id}` for a webhook message,
`r:{agentId}/{runId}` for an agent run (agent ids never contain '/'). A *claim* is an item handed
to SQS under a fresh token; the dispatcher that receives it acts only while that token is still
the item's, so a duplicate or superseded SQS message finds nothing to do.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from .backoff import RetryPolicy


class ItemKind(StrEnum):
    """What a ref names; the value is the ref's prefix."""

    MESSAGE = "m:"
    RUN = "r:"


class Step(StrEnum):
    """What a dispatcher does with a claimed item (the `kind` of its SQS body)."""

    DUE = ""  # the item fell due: deliver a message, or fire a run
    START = "start"  # call the agent of a run that holds a concurrency slot
    TIMEOUT = "timeout"  # fail a run still running on the same attempt


class WayIn(StrEnum):
    """How an item indexed now reaches SQS."""

    TICK = "tick"  # beyond the window the last tick covered: a later tick claims it
    SWEEP = "sweep"  # inside that window: the sweep of its due second claims it
    CLAIM = "claim"  # too close for either: claimed at once, and sent by the caller


class Created(IntEnum):
    """What create_message.lua did with a new message (its return codes)."""

    MISSING = -1  # a replay of no message: nothing stored
    TAKEN = 0  # the id exists (for a replay: not finished yet): nothing stored
    INDEXED = 1  # it waits in the due index for a tick or a sweep
    CLAIMED = 2  # claimed: the caller sends it
    ASK_SWEEP = 3  # the first of its due second: the caller sends that second's sweep


def new_token() -> str:
    return secrets.token_hex(8)


def message_ref(message_id: str) -> str:
    return ItemKind.MESSAGE + message_id


def run_ref(agent_id: str, run_id: str) -> str:
    return f"{ItemKind.RUN}{agent_id}/{run_id}"


_KINDS = {kind.value: kind for kind in ItemKind}  # every prefix is two characters


def kind_of(ref: str) -> ItemKind:
    kind = _KINDS.get(ref[:2])
    if kind is None:
        raise ValueError(f"unknown item ref {ref!r}")
    return kind


def message_id_of(ref: str) -> str:
    if kind_of(ref) is not ItemKind.MESSAGE:
        raise ValueError(f"{ref!r} names no message")
    return ref[len(ItemKind.MESSAGE):]


def split_run_ref(ref: str) -> tuple[str, str]:
    """(agentId, runId) of a run ref."""
    agent_id, _, run_id = ref[len(ItemKind.RUN):].rpartition("/")
    if kind_of(ref) is not ItemKind.RUN or not agent_id or not run_id:
        raise ValueError(f"malformed run ref {ref!r}")
    return agent_id, run_id


@dataclass(frozen=True)
class Claimed:
    """An item handed to SQS: what the SQS message carries."""

    ref: str
    due_ms: int
    token: str
    step: Step = Step.DUE
    # Whom a webhook is delivered to (targets.destination), for per-destination limits and its
    # circuit breaker; '' for agent runs, and for claims made before destinations were counted.
    dest: str = ""
    # The flow-control key its message names ('' for none: its destination is its flow).
    flow: str = ""
    # The shard its message is in (shards.py; '' for the bare head's, where every run is).
    shard: str = ""

    @property
    def item(self) -> ItemKind:
        return kind_of(self.ref)

    @property
    def is_delivery(self) -> bool:
        """A webhook message that fell due."""
        return self.item is ItemKind.MESSAGE and self.step is Step.DUE

    @property
    def is_fire(self) -> bool:
        """A run (a cron slot, a manual run or a retry) that fell due: fired in waves."""
        return self.item is ItemKind.RUN and self.step is Step.DUE

    def check(self) -> None:
        """Refuse what no dispatcher handles, before any item of its batch runs."""
        if self.item is ItemKind.RUN:
            split_run_ref(self.ref)
        elif self.step is not Step.DUE:
            raise ValueError(f"a message has no step {self.step.value!r}")

    def to_body(self) -> str:
        body: dict[str, object] = {"ref": self.ref, "token": self.token, "due": self.due_ms}
        if self.step:
            body["kind"] = self.step.value
        if self.dest:
            body["dest"] = self.dest
        if self.flow:
            body["flow"] = self.flow
        if self.shard:
            body["shard"] = self.shard
        return json.dumps(body)

    @classmethod
    def from_body(cls, data: Mapping[str, object]) -> Claimed:
        return cls(ref=str(data["ref"]), due_ms=int(str(data["due"])), token=str(data["token"]),
                   step=Step(str(data.get("kind", ""))), dest=str(data.get("dest") or ""),
                   flow=str(data.get("flow") or ""), shard=str(data.get("shard") or ""))

    def to_row(self) -> list[object]:
        """The compact form an item takes inside a group's body."""
        row: list[object] = [self.ref, self.token, self.due_ms, self.step.value, self.dest, self.flow,
                             self.shard]
        while len(row) > 4 and row[-1] == "":  # what is empty at the end is left off
            row.pop()
        return row

    @classmethod
    def from_row(cls, row: list[object]) -> Claimed:
        ref, token, due, step, *where = row
        dest, flow, shard = (*(str(value) for value in where[:3]), "", "", "")[:3]
        return cls(ref=str(ref), due_ms=int(str(due)), token=str(token), step=Step(str(step)),
                   dest=dest, flow=flow, shard=shard)


@dataclass(frozen=True)
class Retry:
    """The next attempt of a webhook or an agent run, after its backoff."""

    claim: Claimed
    # When the tick presumes the retry's SQS message lost and claims the item again.
    inflight_deadline_ms: int


def plan_retry(
    ref: str, attempt: int, now_ms: int, policy: RetryPolicy, grace_ms: int,
    retry_after_seconds: float | None = None, dest: str = "", flow: str = "", shard: str = "",
) -> Retry | None:
    """The retry that follows failed attempt `attempt` (1-based), or None once they are spent."""
    if attempt > policy.max_retries:
        return None
    due = now_ms + int(policy.delay_seconds(attempt, retry_after_seconds) * 1000)
    return Retry(Claimed(ref, due, new_token(), dest=dest, flow=flow, shard=shard), due + grace_ms)
