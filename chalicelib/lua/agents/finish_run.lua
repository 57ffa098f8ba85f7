--#include lib
-- Record how a run attempt ended: completed, retry (after a backoff) or failed.
-- KEYS[1] run hash   KEYS[2] agent hash   KEYS[3] running zset   KEYS[4] inflight zset
-- KEYS[5] schedules set   KEYS[6] the pending slot's run hash   KEYS[7] due index
-- KEYS[8] paused set
-- ARGV[1] agent id   ARGV[2] token   ARGV[3] run id   ARGV[4] outcome: completed | retry | failed
-- ARGV[5] now ms   ARGV[6] error text ('' none)   ARGV[7] retention seconds
-- ARGV[8] run ref   ARGV[9] retry due ms   ARGV[10] retry claim token
-- ARGV[11] retry inflight deadline ms
-- ARGV[12] the pending slot's run id ('' none)   ARGV[13] its ref (both read for 'failed')
-- ARGV[14] 'claim' when ARGV[2] is the claim token (the dispatcher), 'callback' when it is
--          the agent's callback token (report_checks reads it as the last ARGV), 'lease' for
--          the claim token of a run timed out because its lease has passed
-- Returns 1; 0 unknown run; -1 finished run; -2 not running (or, for 'lease', its lease has
-- not passed); -3 wrong token.
--#include report_checks
local now = ARGV[5]
if ARGV[14] == 'lease' then
  -- The caller read the run after listing it as expired; meanwhile that attempt may have ended
  -- and its retry begun, with the token it read and a lease of its own that has not passed.
  local lease = redis.call('ZSCORE', KEYS[3], ARGV[3])
  if not lease or tonumber(lease) > tonumber(now) then return -2 end
end
-- A paused agent that was run by hand stays PAUSED when the run ends: the pause outlives it.
local paused = redis.call('HEXISTS', KEYS[2], 'paused') == 1
redis.call('ZREM', KEYS[3], ARGV[3])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[6]) end
if ARGV[4] == 'retry' then
  local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
  redis.call('HSET', KEYS[1], 'status', 'queued', 'token', ARGV[10], 'scheduledFor', ARGV[9])
  redis.call('HDEL', KEYS[1], 'callbackToken')
  redis.call('ZADD', KEYS[4], ARGV[11], ARGV[8])
  redis.call('HSET', KEYS[2], 'status', paused and 'PAUSED' or 'IDLE', 'retryCount', attempt - 1,
    'lastError', ARGV[6], 'backoffUntil', ARGV[9])
  return 1
end
redis.call('HSET', KEYS[1], 'status', ARGV[4], 'finishedAt', now)
-- The callback token stays: a late report that holds it is told the run has finished (409),
-- one that does not is refused (401) without learning that.
redis.call('HDEL', KEYS[1], 'token')
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('HDEL', KEYS[2], 'currentRun', 'backoffUntil')
if ARGV[4] == 'completed' then
  redis.call('HSET', KEYS[2], 'status', paused and 'PAUSED' or 'COMPLETED', 'retryCount', 0)
  redis.call('HDEL', KEYS[2], 'lastError')
else
  -- Retries spent: the agent leaves the schedule, durably, and a pause goes with it (a
  -- paused agent run by hand): it would count as a paused job that resuming could not start.
  redis.call('HSET', KEYS[2], 'status', 'ERROR', 'enabled', 0, 'lastError', ARGV[6])
  redis.call('HDEL', KEYS[2], 'paused')
  cancel_slot(KEYS[2], KEYS[6], KEYS[7], ARGV[12], ARGV[13])
  redis.call('SREM', KEYS[5], ARGV[1])
  redis.call('SREM', KEYS[8], ARGV[1])
end
return 1
