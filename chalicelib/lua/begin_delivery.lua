-- Claim a queued message for delivery: the SQS message's token must match.
-- A duplicate SQS message, a deleted message or a superseded token finds
-- nothing to claim.
-- KEYS[1] message hash   KEYS[2] inflight zset
-- ARGV[1] ref   ARGV[2] claim token   ARGV[3] lease deadline ms
-- Returns the hash as a flat field/value list, or an empty list.
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return {} end
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then return {} end
redis.call('HSET', KEYS[1], 'status', 'delivering')
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return redis.call('HGETALL', KEYS[1])
