"""Every Lua script's KEYS and ARGV, named: one frozen dataclass per script in lua/.

Field names and order are the locals each script binds at its top (tests/test_lua_layout.py
holds the two to each other), so a call is built by name and a script's signature is read here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .scripts import ScriptCall, args_tail, key, keys_tail

Number = int | str  # a value a script reads as a number ('' where it means none)

# -- webhook messages and the due and inflight indexes ---------------------------------------


@dataclass(frozen=True)
class AskSweep(ScriptCall):
    script: ClassVar[str] = "ask_sweep"
    sweep_key: str = key()
    marker_ttl_ms: int


@dataclass(frozen=True)
class CreateMessage(ScriptCall):
    script: ClassVar[str] = "create_message"
    message_key: str = key()
    pending_messages_key: str = key()
    due_key: str = key()
    inflight_key: str = key()
    sweep_key: str = key()
    failed_messages_key: str = key()
    message_counts_key: str = key()
    message_id: str
    webhook_url: str
    payload_json: str
    due_ms: int
    now_ms: int
    message_ref: str
    mode: str
    claim_token: str
    inflight_deadline_ms: int
    marker_ttl_ms: int
    replay_entry: str  # '' for a new message
    attempt_log_size: int
    fields: tuple[tuple[str, str], ...] = args_tail()  # optional (field, value) pairs


@dataclass(frozen=True)
class DeleteMessage(ScriptCall):
    script: ClassVar[str] = "delete_message"
    message_key: str = key()
    pending_messages_key: str = key()
    due_key: str = key()
    inflight_key: str = key()
    failed_messages_key: str = key()
    message_counts_key: str = key()
    message_id: str
    message_ref: str


@dataclass(frozen=True)
class BeginDelivery(ScriptCall):
    script: ClassVar[str] = "begin_delivery"
    message_key: str = key()
    inflight_key: str = key()
    calls_key: str = key()
    waiting_key: str = key()
    state_key: str = key()
    breaker_key: str = key()
    message_counts_key: str = key()
    message_ref: str
    claim_token: str
    lease_deadline_ms: int
    now_ms: int
    max_calls: int  # 0: no per-destination limit
    claim_body: str
    due_ms: int
    postpone_token: str
    grace_ms: int
    known_destination: str  # '1', or '' for a claim that names none


@dataclass(frozen=True)
class FinishDelivery(ScriptCall):
    script: ClassVar[str] = "finish_delivery"
    message_key: str = key()
    inflight_key: str = key()
    pending_messages_key: str = key()
    calls_key: str = key()
    waiting_key: str = key()
    state_key: str = key()
    breaker_key: str = key()
    destinations_key: str = key()
    failed_messages_key: str = key()
    message_counts_key: str = key()
    stats_minute_key: str = key()
    message_ref: str
    claim_token: str
    outcome: str
    now_ms: int
    error_text: str
    retention_seconds: int
    message_id: str
    # Read only when `outcome` is 'retry'.
    retry_claim_token: str
    retry_due_ms: Number
    inflight_deadline_ms: Number
    max_calls: Number  # '': the attempt took no call
    dest: str
    health: str  # what the call says of its destination: ok | fail | limited | '' (no call)
    pause_until_ms: Number
    breaker_threshold: int
    breaker_cooldown_ms: int
    breaker_max_cooldown_ms: int
    attempt_log: str
    stats_field: str
    stats_ttl_seconds: int


@dataclass(frozen=True)
class HandOn(ScriptCall):
    script: ClassVar[str] = "hand_on"
    calls_key: str = key()
    waiting_key: str = key()
    state_key: str = key()
    now_ms: int
    max_calls: int


@dataclass(frozen=True)
class PageAfter(ScriptCall):
    script: ClassVar[str] = "page_after"
    zset_key: str = key()
    cursor_score: int
    cursor_member: str
    page_size: int


@dataclass(frozen=True)
class ClaimDue(ScriptCall):
    script: ClassVar[str] = "claim_due"
    due_key: str = key()
    inflight_key: str = key()
    message_counts_key: str = key()
    item_keys: tuple[str, ...] = keys_tail()
    until_ms: int
    grace_ms: int
    items: tuple[tuple[str, str], ...] = args_tail()  # (ref, fresh claim token) per item


@dataclass(frozen=True)
class Reclaim(ScriptCall):
    script: ClassVar[str] = "reclaim"
    inflight_key: str = key()
    due_key: str = key()
    message_counts_key: str = key()
    item_keys: tuple[str, ...] = keys_tail()
    now_ms: int
    refs: tuple[str, ...] = args_tail()


# -- agents and their schedules --------------------------------------------------------------


@dataclass(frozen=True)
class CreateAgent(ScriptCall):
    script: ClassVar[str] = "agents/create"
    agent_key: str = key()
    agents_key: str = key()
    agent_id: str
    now_ms: int
    fields: tuple[tuple[str, str], ...] = args_tail()  # (field, value) pairs


@dataclass(frozen=True)
class UpdateAgent(ScriptCall):
    script: ClassVar[str] = "agents/update"
    agent_key: str = key()
    now_ms: int
    fields: tuple[tuple[str, str], ...] = args_tail()  # (field, value) pairs


@dataclass(frozen=True)
class DeleteAgent(ScriptCall):
    script: ClassVar[str] = "agents/delete"
    agent_key: str = key()
    agents_key: str = key()
    schedules_key: str = key()
    paused_key: str = key()
    recent_runs_key: str = key()
    pending_slot_key: str = key()
    due_key: str = key()
    agent_id: str
    pending_slot_run_id: str
    pending_slot_ref: str


@dataclass(frozen=True)
class MoveSlot(ScriptCall):
    script: ClassVar[str] = "agents/move_slot"
    agent_key: str = key()
    due_key: str = key()
    next_slot_key: str = key()
    pending_slot_key: str = key()
    agent_id: str
    now_ms: int
    pending_slot_run_id: str
    pending_slot_ref: str
    next_slot_ms: int
    next_slot_run_id: str
    next_slot_ref: str


@dataclass(frozen=True)
class SetSchedule(ScriptCall):
    script: ClassVar[str] = "agents/schedule_set"
    agent_key: str = key()
    schedules_key: str = key()
    paused_key: str = key()
    due_key: str = key()
    next_slot_key: str = key()
    pending_slot_key: str = key()
    agent_id: str
    now_ms: int
    cron_expression: str
    priority: int
    enabled: str  # '1' | '0'
    job_id: str
    schedule_timezone: str  # '' follows the agent's own zone
    next_slot_ms: int
    next_slot_run_id: str
    next_slot_ref: str
    pending_slot_run_id: str
    pending_slot_ref: str


@dataclass(frozen=True)
class DeleteSchedule(ScriptCall):
    script: ClassVar[str] = "agents/schedule_delete"
    agent_key: str = key()
    schedules_key: str = key()
    paused_key: str = key()
    pending_slot_key: str = key()
    due_key: str = key()
    agent_id: str
    now_ms: int
    pending_slot_run_id: str
    pending_slot_ref: str


@dataclass(frozen=True)
class Pause(ScriptCall):
    script: ClassVar[str] = "agents/pause"
    agent_key: str = key()
    paused_key: str = key()
    pending_slot_key: str = key()
    due_key: str = key()
    agent_id: str
    job_id: str
    now_ms: int
    pending_slot_run_id: str
    pending_slot_ref: str


@dataclass(frozen=True)
class Resume(ScriptCall):
    script: ClassVar[str] = "agents/resume"
    agent_key: str = key()
    paused_key: str = key()
    due_key: str = key()
    next_slot_key: str = key()
    agent_id: str
    job_id: str
    now_ms: int
    next_slot_ms: int
    next_slot_run_id: str
    next_slot_ref: str


# -- runs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunNow(ScriptCall):
    script: ClassVar[str] = "agents/run_now"
    agent_key: str = key()
    run_key: str = key()
    ready_key: str = key()
    recent_runs_key: str = key()
    agent_id: str
    run_id: str
    now_ms: int


@dataclass(frozen=True)
class Fire(ScriptCall):
    script: ClassVar[str] = "agents/fire"
    run_key: str = key()
    agent_key: str = key()
    due_key: str = key()
    inflight_key: str = key()
    ready_key: str = key()
    recent_runs_key: str = key()
    next_slot_key: str = key()
    running_key: str = key()
    agent_topic_key: str = key()
    scheduler_topic_key: str = key()
    run_id: str
    claim_token: str
    now_ms: int
    run_ref: str
    next_slot_ms: Number  # '' when the agent has no schedule
    next_slot_run_id: str
    next_slot_ref: str
    retention_seconds: int
    max_running: int
    start_lease_deadline_ms: int
    start_claim_token: str
    callback_token: str  # '' leaves a run that gets a slot 'starting' instead of begun
    default_timeout_seconds: int


@dataclass(frozen=True)
class StartReady(ScriptCall):
    script: ClassVar[str] = "agents/start_ready"
    ready_key: str = key()
    running_key: str = key()
    run_keys: tuple[str, ...] = keys_tail()
    max_running: int
    start_lease_deadline_ms: int
    runs: tuple[tuple[str, str], ...] = args_tail()  # (run id, fresh claim token) per candidate


@dataclass(frozen=True)
class BeginRun(ScriptCall):
    script: ClassVar[str] = "agents/begin_run"
    run_key: str = key()
    agent_key: str = key()
    running_key: str = key()
    run_id: str
    claim_token: str
    now_ms: int
    lease_deadline_ms: int
    callback_token: str


@dataclass(frozen=True)
class Progress(ScriptCall):
    script: ClassVar[str] = "agents/progress"
    run_key: str = key()
    agent_id: str
    token: str
    progress_json: str
    token_kind: str


@dataclass(frozen=True)
class FinishRun(ScriptCall):
    script: ClassVar[str] = "agents/finish_run"
    run_key: str = key()
    agent_key: str = key()
    running_key: str = key()
    inflight_key: str = key()
    schedules_key: str = key()
    pending_slot_key: str = key()
    due_key: str = key()
    paused_key: str = key()
    stats_minute_key: str = key()
    agent_id: str
    token: str
    run_id: str
    outcome: str  # completed | retry | failed
    now_ms: int
    error_text: str
    retention_seconds: int
    run_ref: str
    retry_due_ms: Number
    retry_claim_token: str
    inflight_deadline_ms: int
    pending_slot_run_id: str  # read for 'failed' only
    pending_slot_ref: str
    token_kind: str  # claim | callback | lease
    attempt_log: str
    stats_field: str
    stats_ttl_seconds: int


@dataclass(frozen=True)
class RequeueStart(ScriptCall):
    script: ClassVar[str] = "agents/requeue_start"
    run_key: str = key()
    running_key: str = key()
    ready_key: str = key()
    run_id: str
    now_ms: int


# -- WebSocket connections ---------------------------------------------------------------------


@dataclass(frozen=True)
class Connect(ScriptCall):
    script: ClassVar[str] = "ws/connect"
    connection_key: str = key()
    token_connections_key: str = key()
    tokens_key: str = key()
    connection_id: str
    now_ms: int
    expiry_seconds: int
    protocol: str
    token_id: str
    max_connections: int
    stale_before_ms: int
    hold_seconds: int


@dataclass(frozen=True)
class Authenticate(ScriptCall):
    script: ClassVar[str] = "ws/authenticate"
    connection_key: str = key()
    token_connections_key: str = key()
    tokens_key: str = key()
    connection_id: str
    token_id: str
    now_ms: int
    max_connections: int
    stale_before_ms: int
    hold_seconds: int


@dataclass(frozen=True)
class Disconnect(ScriptCall):
    script: ClassVar[str] = "ws/disconnect"
    connection_key: str = key()
    subscriptions_key: str = key()
    token_connections_key: str = key()
    topic_keys: tuple[str, ...] = keys_tail()
    connection_id: str


@dataclass(frozen=True)
class Subscribe(ScriptCall):
    script: ClassVar[str] = "ws/subscribe"
    connection_key: str = key()
    subscriptions_key: str = key()
    topic_key: str = key()
    connection_id: str
    topic: str
    expiry_seconds: int
    topic_expiry_seconds: int
    max_subscriptions: int
    uncounted_topic: str


@dataclass(frozen=True)
class ProgressOffer(ScriptCall):
    script: ClassVar[str] = "ws/progress_offer"
    progress_key: str = key()
    now_ms: int
    window_ms: int
    report_json: str
    hold_ms: int


@dataclass(frozen=True)
class ProgressTake(ScriptCall):
    script: ClassVar[str] = "ws/progress_take"
    progress_key: str = key()
    now_ms: int
    why: str


@dataclass(frozen=True)
class Unsubscribe(ScriptCall):
    script: ClassVar[str] = "ws/unsubscribe"
    subscriptions_key: str = key()
    topic_key: str = key()
    connection_id: str
    topic: str
