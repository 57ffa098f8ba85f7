--#include lib
-- A dispatcher takes a started run and is about to call the agent.
-- KEYS[1] run hash   KEYS[2] agent hash   KEYS[3] running zset
-- ARGV[1] run id   ARGV[2] claim token   ARGV[3] now ms   ARGV[4] lease deadline ms
-- ARGV[5] callback token for the agent's reports
-- Returns the run hash as a flat list, or an empty list when there is nothing to take.
local run_key = KEYS[1]
local agent_key = KEYS[2]
local running_key = KEYS[3]
local run_id = ARGV[1]
local claim_token = ARGV[2]
local now_ms = ARGV[3]
local lease_deadline_ms = ARGV[4]
local callback_token = ARGV[5]

if redis.call('HGET', run_key, 'status') ~= 'starting' then return {} end
if redis.call('HGET', run_key, 'token') ~= claim_token then return {} end
begin_run(run_key, agent_key, running_key, run_id, now_ms, lease_deadline_ms, callback_token)
return redis.call('HGETALL', run_key)
