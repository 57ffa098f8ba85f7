-- Claim a queued message for delivery: the SQS message's token must match.
-- A duplicate SQS message, a deleted message or a superseded token finds
-- nothing to claim. Under a per-destination limit, a claim that finds its destination's
-- calls all taken waits beside it instead: the call that ends next hands it on.
-- KEYS[1] message hash   KEYS[2] inflight zset
-- KEYS[3] the destination's calls under way (zset: ref, score = lease deadline)
-- KEYS[4] the destination's waiting claims (zset: SQS body, score = due ms)
-- ARGV[1] message ref   ARGV[2] claim token   ARGV[3] lease deadline ms   ARGV[4] now ms
-- ARGV[5] calls allowed at once to the destination (0: no limit)
-- ARGV[6] the claim as an SQS body (kept while it waits)   ARGV[7] its due ms
-- Returns the hash as a flat field/value list, an empty list (nothing to claim) or 'waiting'.
local message_key = KEYS[1]
local inflight_key = KEYS[2]
local calls_key = KEYS[3]
local waiting_key = KEYS[4]
local message_ref = ARGV[1]
local claim_token = ARGV[2]
local lease_deadline_ms = ARGV[3]
local now_ms = ARGV[4]
local max_calls = ARGV[5]
local claim_body = ARGV[6]
local due_ms = ARGV[7]

if redis.call('HGET', message_key, 'status') ~= 'queued' then return {} end
if redis.call('HGET', message_key, 'token') ~= claim_token then return {} end
local limit = tonumber(max_calls)
if limit > 0 then
  -- Calls whose dispatcher died hold their share only until their lease ends.
  redis.call('ZREMRANGEBYSCORE', calls_key, '-inf', now_ms)
  if not redis.call('ZSCORE', calls_key, message_ref) and redis.call('ZCARD', calls_key) >= limit then
    -- While it waits its place in the inflight index moves out to when it should have had a
    -- call even if every call ahead of it took its whole lease: the tick takes it up only if
    -- the calls that were to hand it on were lost, not while a slow destination works through
    -- a long queue.
    local ahead = redis.call('ZCARD', waiting_key)
    local lease = tonumber(lease_deadline_ms) - tonumber(now_ms)
    redis.call('ZADD', waiting_key, due_ms, claim_body)
    redis.call('ZADD', inflight_key, tonumber(now_ms) + (math.floor(ahead / limit) + 2) * lease, message_ref)
    return 'waiting'
  end
  redis.call('ZADD', calls_key, lease_deadline_ms, message_ref)
end
redis.call('HSET', message_key, 'status', 'delivering')
redis.call('HINCRBY', message_key, 'attempts', 1)
redis.call('ZADD', inflight_key, lease_deadline_ms, message_ref)
return redis.call('HGETALL', message_key)
