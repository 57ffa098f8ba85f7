--#include lib
-- Pause an agent's scheduled job: its pending slot is dropped.
-- KEYS[1] agent hash   KEYS[2] paused set   KEYS[3] the pending slot's run hash   KEYS[4] due index
-- ARGV[1] agent id   ARGV[2] job id   ARGV[3] now ms   ARGV[4] the pending slot's run id ('' none)
-- ARGV[5] its ref
-- Returns 1; 0 unknown agent; -1 no schedule or another job id;
-- -2 already paused; -3 a run is in progress.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local cron, job, paused, current = unpack(redis.call('HMGET', KEYS[1], 'cron', 'jobId', 'paused', 'currentRun'))
if not cron or (job or ARGV[1]) ~= ARGV[2] then return -1 end
if paused then return -2 end
if current then return -3 end
cancel_slot(KEYS[1], KEYS[3], KEYS[4], ARGV[4], ARGV[5])
redis.call('HSET', KEYS[1], 'paused', 1, 'updatedAt', ARGV[3])
-- An agent in ERROR stays in ERROR: that is what its user needs to see.
if redis.call('HGET', KEYS[1], 'status') ~= 'ERROR' then
  redis.call('HSET', KEYS[1], 'status', 'PAUSED')
end
redis.call('SADD', KEYS[2], ARGV[1])
return 1
