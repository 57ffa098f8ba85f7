--#include lib
-- Remove an agent's schedule (the agent stays registered).
-- KEYS[1] agent hash   KEYS[2] schedules set   KEYS[3] paused set
-- KEYS[4] the pending slot's run hash   KEYS[5] due index
-- ARGV[1] agent id   ARGV[2] now ms   ARGV[3] the pending slot's run id ('' none)   ARGV[4] its ref
-- Returns 1, 0 when the agent does not exist, -1 when it has no schedule.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if not redis.call('HGET', KEYS[1], 'cron') then return -1 end
cancel_slot(KEYS[1], KEYS[4], KEYS[5], ARGV[3], ARGV[4])
redis.call('HDEL', KEYS[1], 'cron', 'priority', 'enabled', 'jobId', 'scheduleTimezone', 'paused')
redis.call('HSET', KEYS[1], 'updatedAt', ARGV[2])
if redis.call('HGET', KEYS[1], 'status') == 'PAUSED' then
  redis.call('HSET', KEYS[1], 'status', 'IDLE')
end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
return 1
