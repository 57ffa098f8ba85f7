--#include lib
-- Pause an agent's scheduled job: its pending slot is dropped.
-- KEYS[1] agent hash   KEYS[2] paused set   KEYS[3] the pending slot's run hash   KEYS[4] due index
-- ARGV[1] agent id   ARGV[2] job id   ARGV[3] now ms   ARGV[4] the pending slot's run id ('' none)
-- ARGV[5] its ref
-- Returns 1; 0 unknown agent; -1 no schedule or another job id;
-- -2 already paused; -3 a run is in progress.
local agent_key = KEYS[1]
local paused_key = KEYS[2]
local pending_slot_key = KEYS[3]
local due_key = KEYS[4]
local agent_id = ARGV[1]
local job_id = ARGV[2]
local now_ms = ARGV[3]
local pending_slot_run_id = ARGV[4]
local pending_slot_ref = ARGV[5]

if redis.call('EXISTS', agent_key) == 0 then return 0 end
local cron, job, paused, current = unpack(redis.call('HMGET', agent_key,
  'cron', 'jobId', 'paused', 'currentRun'))
if not cron or (job or agent_id) ~= job_id then return -1 end
if paused then return -2 end
if current then return -3 end
cancel_slot(agent_key, pending_slot_key, due_key, pending_slot_run_id, pending_slot_ref)
redis.call('HSET', agent_key, 'paused', 1, 'updatedAt', now_ms)
-- An agent in ERROR stays in ERROR: that is what its user needs to see.
if redis.call('HGET', agent_key, 'status') ~= 'ERROR' then
  redis.call('HSET', agent_key, 'status', 'PAUSED')
end
redis.call('SADD', paused_key, agent_id)
return 1
