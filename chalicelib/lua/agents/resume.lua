--#include lib
-- Resume a paused job; its next slot is computed from now (missed slots skipped).
-- KEYS[1] agent hash   KEYS[2] paused set   KEYS[3] due index   KEYS[4] new slot run hash
-- ARGV[1] agent id   ARGV[2] job id   ARGV[3] now ms   ARGV[4] next slot ms
-- ARGV[5] new slot run id   ARGV[6] new slot ref
-- Returns 1; 0 unknown agent; -1 no schedule or another job id; -2 not paused.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local cron, job, paused, enabled = unpack(redis.call('HMGET', KEYS[1], 'cron', 'jobId', 'paused', 'enabled'))
if not cron or (job or ARGV[1]) ~= ARGV[2] then return -1 end
if not paused then return -2 end
redis.call('HDEL', KEYS[1], 'paused')
redis.call('HSET', KEYS[1], 'updatedAt', ARGV[3])
if redis.call('HGET', KEYS[1], 'status') == 'PAUSED' then  -- an agent in ERROR stays in ERROR
  redis.call('HSET', KEYS[1], 'status', 'IDLE')
end
redis.call('SREM', KEYS[2], ARGV[1])
if enabled == '1' then
  create_slot(KEYS[4], KEYS[3], KEYS[1], ARGV[1], ARGV[5], ARGV[6], ARGV[4], ARGV[3])
end
return 1
