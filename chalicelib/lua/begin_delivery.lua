-- Claim a queued message for delivery: the SQS message's token must match.
-- A duplicate SQS message, a deleted message or a superseded token finds
-- nothing to claim.
-- KEYS[1] message hash   KEYS[2] inflight zset
-- ARGV[1] message ref   ARGV[2] claim token   ARGV[3] lease deadline ms
-- Returns the hash as a flat field/value list, or an empty list.
local message_key = KEYS[1]
local inflight_key = KEYS[2]
local message_ref = ARGV[1]
local claim_token = ARGV[2]
local lease_deadline_ms = ARGV[3]

if redis.call('HGET', message_key, 'status') ~= 'queued' then return {} end
if redis.call('HGET', message_key, 'token') ~= claim_token then return {} end
redis.call('HSET', message_key, 'status', 'delivering')
redis.call('HINCRBY', message_key, 'attempts', 1)
redis.call('ZADD', inflight_key, lease_deadline_ms, message_ref)
return redis.call('HGETALL', message_key)
