-- Record the outcome of a delivery attempt, if this dispatcher still holds it, and give its
-- destination's call back: the claim waiting longest for that destination is handed to the
-- caller, which delivers it next.
-- KEYS[1] message hash   KEYS[2] inflight zset   KEYS[3] pending-messages zset
-- KEYS[4] the destination's calls under way   KEYS[5] the destination's waiting claims
-- ARGV[1] message ref   ARGV[2] claim token   ARGV[3] outcome: delivered | failed | retry
-- ARGV[4] now ms   ARGV[5] error text ('' for none)   ARGV[6] retention seconds
-- ARGV[7] message id
-- ARGV[8] new claim token   ARGV[9] next attempt ms   ARGV[10] inflight deadline ms
--   (read for retry only)
-- ARGV[11] calls allowed at once to the destination (0: no limit)
-- Returns {1, the waiting claim handed on (an SQS body), if any} when recorded; {0} when the
-- claim was lost (lease expired, deleted).
local message_key = KEYS[1]
local inflight_key = KEYS[2]
local pending_messages_key = KEYS[3]
local calls_key = KEYS[4]
local waiting_key = KEYS[5]
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

if redis.call('HGET', message_key, 'status') ~= 'delivering' then return {0} end
if redis.call('HGET', message_key, 'token') ~= claim_token then return {0} end
local handed_on = {}
local limit = tonumber(max_calls)
if limit > 0 then
  redis.call('ZREM', calls_key, message_ref)
  redis.call('ZREMRANGEBYSCORE', calls_key, '-inf', now_ms)
  -- One, for the call that ended: each call that ends hands on one, so the waiting claims
  -- are spread over the callers that free their destination's calls.
  if redis.call('ZCARD', calls_key) < limit then
    handed_on = redis.call('ZRANGE', waiting_key, 0, 0)
    if #handed_on > 0 then redis.call('ZREM', waiting_key, handed_on[1]) end
  end
end
if error_text ~= '' then redis.call('HSET', message_key, 'lastError', error_text) end
if outcome == 'retry' then
  redis.call('HSET', message_key, 'status', 'queued', 'token', retry_claim_token,
    'nextAttemptAt', retry_due_ms)
  redis.call('ZADD', inflight_key, inflight_deadline_ms, message_ref)
  return {1, unpack(handed_on)}
end
redis.call('HSET', message_key, 'status', outcome, 'finishedAt', now_ms)
redis.call('HDEL', message_key, 'token', 'nextAttemptAt')
redis.call('ZREM', inflight_key, message_ref)
redis.call('ZREM', pending_messages_key, message_id)
redis.call('EXPIRE', message_key, retention_seconds)
return {1, unpack(handed_on)}
