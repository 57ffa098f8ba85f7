--#include lib
-- A start whose SQS message or dispatcher was lost gives its slot back and waits again.
-- KEYS[1] run hash   KEYS[2] running zset   KEYS[3] ready zset
-- ARGV[1] run id   ARGV[2] now ms
-- Returns 1 when requeued, else 0.
local run_key = KEYS[1]
local running_key = KEYS[2]
local ready_key = KEYS[3]
local run_id = ARGV[1]
local now_ms = ARGV[2]

local lease = redis.call('ZSCORE', running_key, run_id)
if not lease or tonumber(lease) > tonumber(now_ms) then return 0 end
if redis.call('HGET', run_key, 'status') ~= 'starting' then return 0 end
local prio, due = unpack(redis.call('HMGET', run_key, 'priority', 'scheduledFor'))
redis.call('ZREM', running_key, run_id)
redis.call('HSET', run_key, 'status', 'waiting')
redis.call('HDEL', run_key, 'token')
redis.call('ZADD', ready_key, ready_score(prio, due), run_id)
return 1
