-- Record the outcome of a delivery attempt, if this dispatcher still holds it.
-- KEYS[1] message hash   KEYS[2] inflight zset   KEYS[3] pending-messages zset
-- ARGV[1] ref   ARGV[2] claim token   ARGV[3] outcome: delivered | failed | retry
-- ARGV[4] now ms   ARGV[5] error text ('' for none)   ARGV[6] retention seconds
-- ARGV[7] message id
-- for retry: ARGV[8] new claim token   ARGV[9] next attempt ms
--            ARGV[10] inflight deadline ms
-- Returns 1 when recorded, 0 when the claim was lost (lease expired, deleted).
if redis.call('HGET', KEYS[1], 'status') ~= 'delivering' then return 0 end
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then return 0 end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'lastError', ARGV[5]) end
if ARGV[3] == 'retry' then
  redis.call('HSET', KEYS[1], 'status', 'queued', 'token', ARGV[8], 'nextAttemptAt', ARGV[9])
  redis.call('ZADD', KEYS[2], ARGV[10], ARGV[1])
  return 1
end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'finishedAt', ARGV[4])
redis.call('HDEL', KEYS[1], 'token', 'nextAttemptAt')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 1
