-- Record the outcome of a delivery attempt, if this dispatcher still holds it.
-- KEYS[1] message hash   KEYS[2] inflight zset   KEYS[3] pending-messages zset
-- ARGV[1] message ref   ARGV[2] claim token   ARGV[3] outcome: delivered | failed | retry
-- ARGV[4] now ms   ARGV[5] error text ('' for none)   ARGV[6] retention seconds
-- ARGV[7] message id
-- for retry only (absent otherwise): ARGV[8] new claim token   ARGV[9] next attempt ms
--                                    ARGV[10] inflight deadline ms
-- Returns 1 when recorded, 0 when the claim was lost (lease expired, deleted).
local message_key = KEYS[1]
local inflight_key = KEYS[2]
local pending_messages_key = KEYS[3]
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

if redis.call('HGET', message_key, 'status') ~= 'delivering' then return 0 end
if redis.call('HGET', message_key, 'token') ~= claim_token then return 0 end
if error_text ~= '' then redis.call('HSET', message_key, 'lastError', error_text) end
if outcome == 'retry' then
  redis.call('HSET', message_key, 'status', 'queued', 'token', retry_claim_token,
    'nextAttemptAt', retry_due_ms)
  redis.call('ZADD', inflight_key, inflight_deadline_ms, message_ref)
  return 1
end
redis.call('HSET', message_key, 'status', outcome, 'finishedAt', now_ms)
redis.call('HDEL', message_key, 'token', 'nextAttemptAt')
redis.call('ZREM', inflight_key, message_ref)
redis.call('ZREM', pending_messages_key, message_id)
redis.call('EXPIRE', message_key, retention_seconds)
return 1
