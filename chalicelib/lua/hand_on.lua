-- Hand on the claim that has waited longest for a call to its destination, when a call is free:
-- for a caller that was handed a claim which no longer had anything to deliver (deleted or
-- superseded while it waited), so the call it would have made goes to the next one.
-- KEYS[1] the destination's calls under way   KEYS[2] the destination's waiting claims
-- ARGV[1] now ms   ARGV[2] calls allowed at once to the destination
-- Returns the claim (an SQS body), or an empty list.
local calls_key = KEYS[1]
local waiting_key = KEYS[2]
local now_ms = ARGV[1]
local max_calls = ARGV[2]

redis.call('ZREMRANGEBYSCORE', calls_key, '-inf', now_ms)
if redis.call('ZCARD', calls_key) >= tonumber(max_calls) then return {} end
local next_claim = redis.call('ZRANGE', waiting_key, 0, 0)
if #next_claim > 0 then redis.call('ZREM', waiting_key, next_claim[1]) end
return next_claim
