-- Record the outcome of a delivery attempt, if this dispatcher still holds it, and give its
-- flow's call back: the claim waiting longest in that flow is handed to the caller, which
-- delivers it next. A call that was made is counted against its destination's breaker, and a
-- 429's Retry-After pauses the whole flow. The attempt goes into the message's attempt log,
-- and into this minute's stats; a failed message into the failed index.
--#include flow
--#include message_counts
--#include stats_minute
-- KEYS[1] message hash   KEYS[2] inflight zset   KEYS[3] pending-messages zset
-- KEYS[4] the flow's calls under way   KEYS[5] the flow's waiting claims
-- KEYS[6] the flow's state   KEYS[7] the destination's breaker   KEYS[8] destinations zset
-- KEYS[9] failed-messages zset   KEYS[10] message counts hash   KEYS[11] this minute's stats hash
-- ARGV[1] message ref   ARGV[2] claim token   ARGV[3] outcome: delivered | failed | retry
-- ARGV[4] now ms   ARGV[5] error text ('' for none)   ARGV[6] retention seconds
-- ARGV[7] message id
-- ARGV[8] new claim token   ARGV[9] next attempt ms   ARGV[10] inflight deadline ms
--   (read for retry only)
-- ARGV[11] calls allowed at once to a destination (0: no limit; the message's own
--   flow-control parallelism wins), as begin_delivery.lua was given; '' when the attempt
--   took no call (its breaker was open)
-- ARGV[12] the destination   ARGV[13] what the call says of it: ok | fail | limited (a 429) |
--   '' (no call made)
-- ARGV[14] pause the flow until this ms ('' for no pause)
-- ARGV[15] failures in a row that open the breaker   ARGV[16] its first cool-down ms
-- ARGV[17] its longest cool-down ms
-- ARGV[18] the message's attempt log with this attempt (the caller read the rest as it claimed it)
-- ARGV[19] the field of this minute's stats that counts the attempt (its outcome and lateness)
-- ARGV[20] how long a minute's stats bucket lives (s)
-- Returns {1, the waiting claim handed on (an SQS body), if any} when recorded; {0} when the
-- claim was lost (lease expired, deleted).
local message_key = KEYS[1]
local inflight_key = KEYS[2]
local pending_messages_key = KEYS[3]
local calls_key = KEYS[4]
local waiting_key = KEYS[5]
local state_key = KEYS[6]
local breaker_key = KEYS[7]
local destinations_key = KEYS[8]
local failed_messages_key = KEYS[9]
local message_counts_key = KEYS[10]
local stats_minute_key = KEYS[11]
local message_ref = ARGV[1]
local claim_token = ARGV[2]
local outcome = ARGV[3]
local now_ms = ARGV[4]
local error_text = ARGV[5]
local retention_seconds = ARGV[6]
local message_id = ARGV[7]
local retry_claim_token = ARGV[8]
local retry_due_ms = ARGV[9]
local inflight_deadline_ms = ARGV[10]
local max_calls = ARGV[11]
local dest = ARGV[12]
local health = ARGV[13]
local pause_until_ms = ARGV[14]
local breaker_threshold = ARGV[15]
local breaker_cooldown_ms = ARGV[16]
local breaker_max_cooldown_ms = ARGV[17]
local attempt_log = ARGV[18]
local stats_field = ARGV[19]
local stats_ttl_seconds = ARGV[20]

local message = redis.call('HMGET', message_key, 'status', 'token', 'flowParallelism')
if message[1] ~= 'delivering' or message[2] ~= claim_token then return {0} end
local now = tonumber(now_ms)
local handed_on = {}
local limit = 0
if max_calls ~= '' then limit = tonumber(message[3] or max_calls) end
if limit > 0 then
  redis.call('ZREM', calls_key, message_ref)
  -- One, for the call that ended: each call that ends hands on one, so the waiting claims
  -- are spread over the callers that free their flow's calls. Nothing waits in most flows:
  -- only then are its calls counted (those past their lease hold nothing).
  local next_claim = redis.call('ZRANGE', waiting_key, 0, 0)
  if #next_claim > 0 then
    redis.call('ZREMRANGEBYSCORE', calls_key, '-inf', now_ms)
    if redis.call('ZCARD', calls_key) < limit then
      redis.call('ZREM', waiting_key, next_claim[1])
      handed_on = next_claim
    end
  end
end
if health ~= '' then
  breaker_record(breaker_key, destinations_key, dest, message_ref, health, now, breaker_threshold,
    breaker_cooldown_ms, breaker_max_cooldown_ms)
end
if pause_until_ms ~= '' then
  local until_ms = tonumber(pause_until_ms)
  if until_ms > tonumber(redis.call('HGET', state_key, 'pausedUntil') or '0') then
    redis.call('HSET', state_key, 'pausedUntil', until_ms)
    keep_for(state_key, until_ms - now + 60000)
  end
end
count_down(message_counts_key, 'delivering')
count_minute(stats_minute_key, stats_field, stats_ttl_seconds)
-- The outcome with the log, and the error if any, in one HSET.
local function record(...)
  if error_text == '' then return redis.call('HSET', message_key, 'attemptLog', attempt_log, ...) end
  return redis.call('HSET', message_key, 'attemptLog', attempt_log, 'lastError', error_text, ...)
end
if outcome == 'retry' then
  record('status', 'queued', 'token', retry_claim_token, 'nextAttemptAt', retry_due_ms)
  redis.call('ZADD', inflight_key, inflight_deadline_ms, message_ref)
  redis.call('HINCRBY', message_counts_key, 'queued', 1)
  return {1, unpack(handed_on)}
end
if outcome == 'failed' then
  -- Newest first in score order; those past retention (their message has expired) leave.
  redis.call('ZADD', failed_messages_key, string.format('%.0f', -now), message_id)
  redis.call('ZREMRANGEBYSCORE', failed_messages_key,
    '(' .. string.format('%.0f', tonumber(retention_seconds) * 1000 - now), '+inf')
end
-- Its `token` and `nextAttemptAt` stay: no claim matches a finished message whatever its token,
-- and a finished message shows no next attempt (a replay drops both).
record('status', outcome, 'finishedAt', now_ms)
redis.call('ZREM', inflight_key, message_ref)
redis.call('ZREM', pending_messages_key, message_id)
redis.call('EXPIRE', message_key, retention_seconds)
return {1, unpack(handed_on)}
