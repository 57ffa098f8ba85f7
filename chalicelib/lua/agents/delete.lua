--#include lib
-- Remove an agent and its schedule, unless a run of it is in progress.
-- KEYS[1] agent hash   KEYS[2] agents zset   KEYS[3] schedules set
-- KEYS[4] paused set   KEYS[5] agent's recent-runs zset
-- KEYS[6] the pending slot's run hash   KEYS[7] due index
-- ARGV[1] agent id   ARGV[2] the pending slot's run id ('' none)   ARGV[3] its ref
-- Returns 1 when deleted, 0 when unknown, -1 while a run is in progress.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'currentRun') then return -1 end
cancel_slot(KEYS[1], KEYS[6], KEYS[7], ARGV[2], ARGV[3])
redis.call('DEL', KEYS[1], KEYS[5])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
return 1
