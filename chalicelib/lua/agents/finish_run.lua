--#include lib
--#include ../stats_minute
-- Record how a run attempt ended: completed, retry (after a backoff) or failed; the attempt goes
-- into the run's attempt log and into this minute's stats.
-- KEYS[1] run hash   KEYS[2] agent hash   KEYS[3] running zset   KEYS[4] inflight zset
-- KEYS[5] schedules set   KEYS[6] the pending slot's run hash   KEYS[7] due index
-- KEYS[8] paused set   KEYS[9] this minute's stats hash
-- ARGV[1] agent id   ARGV[2] token   ARGV[3] run id   ARGV[4] outcome: completed | retry | failed
-- ARGV[5] now ms   ARGV[6] error text ('' none)   ARGV[7] retention seconds
-- ARGV[8] run ref   ARGV[9] retry due ms   ARGV[10] retry claim token
-- ARGV[11] retry inflight deadline ms
-- ARGV[12] the pending slot's run id ('' none)   ARGV[13] its ref (both read for 'failed')
-- ARGV[14] the token's kind: 'claim' when it is the claim token (the dispatcher), 'callback'
--          when it is the agent's callback token, 'lease' for the claim token of a run timed
--          out because its lease has passed
-- ARGV[15] the run's attempt log with this attempt (the caller read the rest with the run)
-- ARGV[16] the field of this minute's stats that counts the outcome
-- ARGV[17] how long a minute's stats bucket lives (s)
-- Returns 1; 0 unknown run; -1 finished run; -2 not running (or, for 'lease', its lease has
-- not passed); -3 wrong token.
--#include report_checks
local run_key = KEYS[1]
local agent_key = KEYS[2]
local running_key = KEYS[3]
local inflight_key = KEYS[4]
local schedules_key = KEYS[5]
local pending_slot_key = KEYS[6]
local due_key = KEYS[7]
local paused_key = KEYS[8]
local stats_minute_key = KEYS[9]
local agent_id = ARGV[1]
local token = ARGV[2]
local run_id = ARGV[3]
local outcome = ARGV[4]
local now_ms = ARGV[5]
local error_text = ARGV[6]
local retention_seconds = ARGV[7]
local run_ref = ARGV[8]
local retry_due_ms = ARGV[9]
local retry_claim_token = ARGV[10]
local inflight_deadline_ms = ARGV[11]
local pending_slot_run_id = ARGV[12]
local pending_slot_ref = ARGV[13]
local token_kind = ARGV[14]
local attempt_log = ARGV[15]
local stats_field = ARGV[16]
local stats_ttl_seconds = ARGV[17]

local refusal = report_checks(run_key, agent_id, token, token_kind)
if refusal then return refusal end
if token_kind == 'lease' then
  -- The caller read the run after listing it as expired; meanwhile that attempt may have ended
  -- and its retry begun, with the token it read and a lease of its own that has not passed.
  local lease = redis.call('ZSCORE', running_key, run_id)
  if not lease or tonumber(lease) > tonumber(now_ms) then return -2 end
end
-- A paused agent that was run by hand stays PAUSED when the run ends: the pause outlives it.
local paused = redis.call('HEXISTS', agent_key, 'paused') == 1
redis.call('ZREM', running_key, run_id)
if error_text ~= '' then redis.call('HSET', run_key, 'error', error_text) end
count_minute(stats_minute_key, stats_field, stats_ttl_seconds)
if outcome == 'retry' then
  local attempt = redis.call('HINCRBY', run_key, 'attempt', 1)
  redis.call('HSET', run_key, 'status', 'queued', 'token', retry_claim_token, 'scheduledFor', retry_due_ms,
    'attemptLog', attempt_log)
  redis.call('HDEL', run_key, 'callbackToken')
  redis.call('ZADD', inflight_key, inflight_deadline_ms, run_ref)
  redis.call('HSET', agent_key, 'status', paused and 'PAUSED' or 'IDLE', 'retryCount', attempt - 1,
    'lastError', error_text, 'backoffUntil', retry_due_ms)
  return 1
end
redis.call('HSET', run_key, 'status', outcome, 'finishedAt', now_ms, 'attemptLog', attempt_log)
-- The callback token stays: a late report that holds it is told the run has finished (409),
-- one that does not is refused (401) without learning that.
redis.call('HDEL', run_key, 'token')
redis.call('EXPIRE', run_key, retention_seconds)
redis.call('HDEL', agent_key, 'currentRun', 'backoffUntil')
if outcome == 'completed' then
  redis.call('HSET', agent_key, 'status', paused and 'PAUSED' or 'COMPLETED', 'retryCount', 0)
  redis.call('HDEL', agent_key, 'lastError')
else
  -- Retries spent: the agent leaves the schedule, durably, and a pause goes with it (a
  -- paused agent run by hand): it would count as a paused job that resuming could not start.
  redis.call('HSET', agent_key, 'status', 'ERROR', 'enabled', 0, 'lastError', error_text)
  redis.call('HDEL', agent_key, 'paused')
  cancel_slot(agent_key, pending_slot_key, due_key, pending_slot_run_id, pending_slot_ref)
  redis.call('SREM', schedules_key, agent_id)
  redis.call('SREM', paused_key, agent_id)
end
return 1
