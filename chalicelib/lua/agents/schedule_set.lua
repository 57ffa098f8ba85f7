--#include lib
-- Create or replace an agent's schedule.
-- KEYS[1] agent hash   KEYS[2] schedules set   KEYS[3] paused set
-- KEYS[4] due index    KEYS[5] hash for the new slot's run   KEYS[6] the pending slot's run hash
-- ARGV[1] agent id   ARGV[2] now ms   ARGV[3] cron expression   ARGV[4] priority (1-4)
-- ARGV[5] enabled '1' | '0'   ARGV[6] job id   ARGV[7] schedule time zone ('' = agent's)
-- ARGV[8] next slot ms   ARGV[9] new slot run id   ARGV[10] new slot ref
-- ARGV[11] the pending slot's run id ('' none)   ARGV[12] its ref
-- Returns 1, or 0 when the agent does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
cancel_slot(KEYS[1], KEYS[6], KEYS[4], ARGV[11], ARGV[12])
redis.call('HSET', KEYS[1], 'cron', ARGV[3], 'priority', ARGV[4], 'enabled', ARGV[5],
  'jobId', ARGV[6], 'scheduleTimezone', ARGV[7], 'updatedAt', ARGV[2])
redis.call('HDEL', KEYS[1], 'paused')
redis.call('SREM', KEYS[3], ARGV[1])
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'ERROR' or status == 'PAUSED' then
  redis.call('HSET', KEYS[1], 'status', 'IDLE')
end
if ARGV[5] == '1' then
  create_slot(KEYS[5], KEYS[4], KEYS[1], ARGV[1], ARGV[9], ARGV[10], ARGV[8], ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[1])
else
  redis.call('SREM', KEYS[2], ARGV[1])
end
return 1
