-- Hand on the claim that has waited longest in a flow, when a call is free: for a caller that
-- was handed a claim which no longer had anything to deliver (deleted or superseded while it
-- waited), so the call it would have made goes to the next one.
-- KEYS[1] the flow's calls under way   KEYS[2] the flow's waiting claims
-- KEYS[3] the flow's state (its `parallelism`, noted when a claim began to wait)
-- ARGV[1] now ms   ARGV[2] calls allowed at once to a destination, unless the flow noted its own
-- Returns the claim (an SQS body), or an empty list.
local calls_key = KEYS[1]
local waiting_key = KEYS[2]
local state_key = KEYS[3]
local now_ms = ARGV[1]
local max_calls = ARGV[2]

redis.call('ZREMRANGEBYSCORE', calls_key, '-inf', now_ms)
local limit = tonumber(redis.call('HGET', state_key, 'parallelism') or max_calls)
if limit > 0 and redis.call('ZCARD', calls_key) >= limit then return {} end
local next_claim = redis.call('ZRANGE', waiting_key, 0, 0)
if #next_claim > 0 then redis.call('ZREM', waiting_key, next_claim[1]) end
return next_claim
