--#include lib
-- Remove an agent's schedule (the agent stays registered).
-- KEYS[1] agent hash   KEYS[2] schedules set   KEYS[3] paused set
-- KEYS[4] the pending slot's run hash   KEYS[5] due index
-- ARGV[1] agent id   ARGV[2] now ms   ARGV[3] the pending slot's run id ('' none)   ARGV[4] its ref
-- Returns 1, 0 when the agent does not exist, -1 when it has no schedule.
local agent_key = KEYS[1]
local schedules_key = KEYS[2]
local paused_key = KEYS[3]
local pending_slot_key = KEYS[4]
local due_key = KEYS[5]
local agent_id = ARGV[1]
local now_ms = ARGV[2]
local pending_slot_run_id = ARGV[3]
local pending_slot_ref = ARGV[4]

if redis.call('EXISTS', agent_key) == 0 then return 0 end
if not redis.call('HGET', agent_key, 'cron') then return -1 end
cancel_slot(agent_key, pending_slot_key, due_key, pending_slot_run_id, pending_slot_ref)
redis.call('HDEL', agent_key, 'cron', 'priority', 'enabled', 'jobId', 'scheduleTimezone', 'paused')
redis.call('HSET', agent_key, 'updatedAt', now_ms)
if redis.call('HGET', agent_key, 'status') == 'PAUSED' then
  redis.call('HSET', agent_key, 'status', 'IDLE')
end
redis.call('SREM', schedules_key, agent_id)
redis.call('SREM', paused_key, agent_id)
return 1
