--#include lib
-- Queue a manual run for a free concurrency slot, unless a run is in progress.
-- KEYS[1] agent hash   KEYS[2] run hash   KEYS[3] ready zset   KEYS[4] agent's recent-runs zset
-- ARGV[1] agent id   ARGV[2] run id   ARGV[3] now ms
-- Returns 1; 0 unknown agent; -1 a run is in progress.
local agent_key = KEYS[1]
local run_key = KEYS[2]
local ready_key = KEYS[3]
local recent_runs_key = KEYS[4]
local agent_id = ARGV[1]
local run_id = ARGV[2]
local now_ms = ARGV[3]

if redis.call('EXISTS', agent_key) == 0 then return 0 end
local current, prio, job = unpack(redis.call('HMGET', agent_key, 'currentRun', 'priority', 'jobId'))
if current then return -1 end
redis.call('HSET', run_key, 'runId', run_id, 'agentId', agent_id, 'jobId', job or agent_id,
  'trigger', 'manual', 'status', 'waiting', 'attempt', 1, 'scheduledFor', now_ms,
  'priority', prio or 2, 'createdAt', now_ms)
redis.call('ZADD', ready_key, ready_score(prio, now_ms), run_id)
redis.call('HSET', agent_key, 'currentRun', run_id)
remember_run(recent_runs_key, run_id, now_ms)
return 1
