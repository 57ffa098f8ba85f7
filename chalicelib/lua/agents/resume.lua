--#include lib
-- Resume a paused job; its next slot is computed from now (missed slots skipped).
-- KEYS[1] agent hash   KEYS[2] paused set   KEYS[3] due index   KEYS[4] new slot run hash
-- ARGV[1] agent id   ARGV[2] job id   ARGV[3] now ms   ARGV[4] next slot ms
-- ARGV[5] new slot run id   ARGV[6] new slot ref
-- Returns 1; 0 unknown agent; -1 no schedule or another job id; -2 not paused.
local agent_key = KEYS[1]
local paused_key = KEYS[2]
local due_key = KEYS[3]
local next_slot_key = KEYS[4]
local agent_id = ARGV[1]
local job_id = ARGV[2]
local now_ms = ARGV[3]
local next_slot_ms = ARGV[4]
local next_slot_run_id = ARGV[5]
local next_slot_ref = ARGV[6]

if redis.call('EXISTS', agent_key) == 0 then return 0 end
local cron, job, paused, enabled = unpack(redis.call('HMGET', agent_key,
  'cron', 'jobId', 'paused', 'enabled'))
if not cron or (job or agent_id) ~= job_id then return -1 end
if not paused then return -2 end
redis.call('HDEL', agent_key, 'paused')
redis.call('HSET', agent_key, 'updatedAt', now_ms)
if redis.call('HGET', agent_key, 'status') == 'PAUSED' then  -- an agent in ERROR stays in ERROR
  redis.call('HSET', agent_key, 'status', 'IDLE')
end
redis.call('SREM', paused_key, agent_id)
if enabled == '1' then
  create_slot(next_slot_key, due_key, agent_key, agent_id, next_slot_run_id, next_slot_ref, next_slot_ms,
    now_ms)
end
return 1
