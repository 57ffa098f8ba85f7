--#include lib
-- A run's SQS message came due: a cron slot fires, or a retry's backoff is over.
-- A slot schedules the next slot, then is skipped if the agent's previous run
-- is still going; otherwise the run waits in the ready queue for a slot.
-- KEYS[1] run hash   KEYS[2] agent hash   KEYS[3] due index   KEYS[4] inflight zset
-- KEYS[5] ready zset   KEYS[6] agent's recent-runs zset   KEYS[7] next slot's run hash
-- KEYS[8] running zset   KEYS[9] the agent's WebSocket subscribers
-- KEYS[10] the scheduler's subscribers
-- ARGV[1] run id   ARGV[2] claim token   ARGV[3] now ms   ARGV[4] this run's ref
-- ARGV[5] next slot ms ('' when the agent has no schedule)   ARGV[6] next slot run id
-- ARGV[7] next slot ref   ARGV[8] retention seconds for finished runs
-- ARGV[9] max concurrent runs   ARGV[10] start lease deadline ms
-- ARGV[11] claim token for starting this run
-- ARGV[12] callback token: when given, a run that gets a slot is begun here (as begin_run.lua
--          would), so the dispatcher calls its agent without another round trip
-- ARGV[13] the agents' default timeout in seconds (the lease of a run begun here)
-- Returns 'starting' (a slot was free and no better run waits: this dispatcher calls the
-- agent now, on its second), 'waiting', 'skipped', 'stale' or 'none' (nothing to claim); or,
-- for a run begun here, {'running', run hash, agent hash, the agent's subscribers, how many
-- subscribe to the scheduler} (hashes as flat lists), so its start event costs no round trip.
local run_key = KEYS[1]
local agent_key = KEYS[2]
local due_key = KEYS[3]
local inflight_key = KEYS[4]
local ready_key = KEYS[5]
local recent_runs_key = KEYS[6]
local next_slot_key = KEYS[7]
local running_key = KEYS[8]
local agent_topic_key = KEYS[9]
local scheduler_topic_key = KEYS[10]
local run_id = ARGV[1]
local claim_token = ARGV[2]
local now_ms = ARGV[3]
local run_ref = ARGV[4]
local next_slot_ms = ARGV[5]
local next_slot_run_id = ARGV[6]
local next_slot_ref = ARGV[7]
local retention_seconds = ARGV[8]
local max_running = ARGV[9]
local start_lease_deadline_ms = ARGV[10]
local start_claim_token = ARGV[11]
local callback_token = ARGV[12]
local default_timeout_seconds = ARGV[13]

local status, token, trigger, attempt, agent_id, prio, due = unpack(redis.call('HMGET', run_key,
  'status', 'token', 'trigger', 'attempt', 'agentId', 'priority', 'scheduledFor'))
if status ~= 'queued' or token ~= claim_token then return 'none' end
redis.call('ZREM', inflight_key, run_ref)
redis.call('HDEL', run_key, 'token')
local slot_run, current = unpack(redis.call('HMGET', agent_key, 'slotRun', 'currentRun'))
if trigger == 'cron' and attempt == '1' then
  if slot_run ~= run_id then
    redis.call('DEL', run_key)
    return 'stale'
  end
  if next_slot_ms ~= '' then
    create_slot(next_slot_key, due_key, agent_key, agent_id, next_slot_run_id, next_slot_ref,
      next_slot_ms, now_ms)
  else
    redis.call('HDEL', agent_key, 'slotRun', 'nextRunAt')  -- the firing run was the last slot
  end
  remember_run(recent_runs_key, run_id, now_ms)
  if current then
    redis.call('HSET', run_key, 'status', 'skipped', 'finishedAt', now_ms,
      'error', 'skipped: the previous run (' .. current .. ') was still in progress')
    redis.call('EXPIRE', run_key, retention_seconds)
    return 'skipped'
  end
  redis.call('HSET', agent_key, 'currentRun', run_id)
elseif current ~= run_id then
  redis.call('DEL', run_key)
  return 'stale'
end
local score = ready_score(prio, due)
local best = redis.call('ZRANGE', ready_key, 0, 0, 'WITHSCORES')
if redis.call('ZCARD', running_key) < tonumber(max_running)
    and (#best == 0 or tonumber(best[2]) >= tonumber(score)) then
  -- As start_ready.lua would, without a trip through the ready queue and SQS.
  if callback_token == '' then
    redis.call('ZADD', running_key, start_lease_deadline_ms, run_id)
    redis.call('HSET', run_key, 'status', 'starting', 'token', start_claim_token)
    return 'starting'
  end
  local timeout = tonumber(redis.call('HGET', agent_key, 'timeoutSeconds') or default_timeout_seconds)
  redis.call('HSET', run_key, 'token', start_claim_token)
  begin_run(run_key, agent_key, running_key, run_id, now_ms, tonumber(now_ms) + timeout * 1000,
    callback_token)
  return {'running', redis.call('HGETALL', run_key), redis.call('HGETALL', agent_key),
    redis.call('SMEMBERS', agent_topic_key), redis.call('SCARD', scheduler_topic_key)}
end
redis.call('HSET', run_key, 'status', 'waiting')
redis.call('ZADD', ready_key, score, run_id)
return 'waiting'
