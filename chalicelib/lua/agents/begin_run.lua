--#include lib
-- A dispatcher takes a started run and is about to call the agent.
-- KEYS[1] run hash   KEYS[2] agent hash   KEYS[3] running zset
-- ARGV[1] run id   ARGV[2] claim token   ARGV[3] now ms   ARGV[4] lease deadline ms
-- ARGV[5] callback token for the agent's reports
-- Returns the run hash as a flat list, or an empty list when there is nothing to take.
if redis.call('HGET', KEYS[1], 'status') ~= 'starting' then return {} end
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then return {} end
begin_run(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[3], ARGV[4], ARGV[5])
return redis.call('HGETALL', KEYS[1])
