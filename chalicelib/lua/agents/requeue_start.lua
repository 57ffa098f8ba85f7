--#include lib
-- A start whose SQS message or dispatcher was lost gives its slot back and waits again.
-- KEYS[1] run hash   KEYS[2] running zset   KEYS[3] ready zset
-- ARGV[1] run id   ARGV[2] now ms
-- Returns 1 when requeued, else 0.
local lease = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not lease or tonumber(lease) > tonumber(ARGV[2]) then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= 'starting' then return 0 end
local prio, due = unpack(redis.call('HMGET', KEYS[1], 'priority', 'scheduledFor'))
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'waiting')
redis.call('HDEL', KEYS[1], 'token')
redis.call('ZADD', KEYS[3], ready_score(prio, due), ARGV[1])
return 1
