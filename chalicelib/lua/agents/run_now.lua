--#include lib
-- Queue a manual run for a free concurrency slot, unless a run is in progress.
-- KEYS[1] agent hash   KEYS[2] run hash   KEYS[3] ready zset   KEYS[4] agent's recent-runs zset
-- ARGV[1] agent id   ARGV[2] run id   ARGV[3] now ms
-- Returns 1; 0 unknown agent; -1 a run is in progress.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local current, prio, job = unpack(redis.call('HMGET', KEYS[1], 'currentRun', 'priority', 'jobId'))
if current then return -1 end
redis.call('HSET', KEYS[2], 'runId', ARGV[2], 'agentId', ARGV[1], 'jobId', job or ARGV[1],
  'trigger', 'manual', 'status', 'waiting', 'attempt', 1, 'scheduledFor', ARGV[3],
  'priority', prio or 2, 'createdAt', ARGV[3])
redis.call('ZADD', KEYS[3], ready_score(prio, ARGV[3]), ARGV[2])
redis.call('HSET', KEYS[1], 'currentRun', ARGV[2])
remember_run(KEYS[4], ARGV[2], ARGV[3])
return 1
