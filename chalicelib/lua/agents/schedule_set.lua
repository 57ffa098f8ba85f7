--#include lib
-- Create or replace an agent's schedule.
-- KEYS[1] agent hash   KEYS[2] schedules set   KEYS[3] paused set
-- KEYS[4] due index    KEYS[5] hash for the new slot's run   KEYS[6] the pending slot's run hash
-- ARGV[1] agent id   ARGV[2] now ms   ARGV[3] cron expression   ARGV[4] priority (1-4)
-- ARGV[5] enabled '1' | '0'   ARGV[6] job id   ARGV[7] schedule time zone ('' = agent's)
-- ARGV[8] next slot ms   ARGV[9] new slot run id   ARGV[10] new slot ref
-- ARGV[11] the pending slot's run id ('' none)   ARGV[12] its ref
-- Returns 1, or 0 when the agent does not exist.
local agent_key = KEYS[1]
local schedules_key = KEYS[2]
local paused_key = KEYS[3]
local due_key = KEYS[4]
local next_slot_key = KEYS[5]
local pending_slot_key = KEYS[6]
local agent_id = ARGV[1]
local now_ms = ARGV[2]
local cron_expression = ARGV[3]
local priority = ARGV[4]
local enabled = ARGV[5]
local job_id = ARGV[6]
local schedule_timezone = ARGV[7]
local next_slot_ms = ARGV[8]
local next_slot_run_id = ARGV[9]
local next_slot_ref = ARGV[10]
local pending_slot_run_id = ARGV[11]
local pending_slot_ref = ARGV[12]

if redis.call('EXISTS', agent_key) == 0 then return 0 end
cancel_slot(agent_key, pending_slot_key, due_key, pending_slot_run_id, pending_slot_ref)
redis.call('HSET', agent_key, 'cron', cron_expression, 'priority', priority, 'enabled', enabled,
  'jobId', job_id, 'scheduleTimezone', schedule_timezone, 'updatedAt', now_ms)
redis.call('HDEL', agent_key, 'paused')
redis.call('SREM', paused_key, agent_id)
local status = redis.call('HGET', agent_key, 'status')
if status == 'ERROR' or status == 'PAUSED' then
  redis.call('HSET', agent_key, 'status', 'IDLE')
end
if enabled == '1' then
  create_slot(next_slot_key, due_key, agent_key, agent_id, next_slot_run_id, next_slot_ref, next_slot_ms,
    now_ms)
  redis.call('SADD', schedules_key, agent_id)
else
  redis.call('SREM', schedules_key, agent_id)
end
return 1
