--#include lib
-- Remove an agent and its schedule, unless a run of it is in progress.
-- KEYS[1] agent hash   KEYS[2] agents zset   KEYS[3] schedules set
-- KEYS[4] paused set   KEYS[5] agent's recent-runs zset
-- KEYS[6] the pending slot's run hash   KEYS[7] due index
-- ARGV[1] agent id   ARGV[2] the pending slot's run id ('' none)   ARGV[3] its ref
-- Returns 1 when deleted, 0 when unknown, -1 while a run is in progress.
local agent_key = KEYS[1]
local agents_key = KEYS[2]
local schedules_key = KEYS[3]
local paused_key = KEYS[4]
local recent_runs_key = KEYS[5]
local pending_slot_key = KEYS[6]
local due_key = KEYS[7]
local agent_id = ARGV[1]
local pending_slot_run_id = ARGV[2]
local pending_slot_ref = ARGV[3]

if redis.call('EXISTS', agent_key) == 0 then return 0 end
if redis.call('HGET', agent_key, 'currentRun') then return -1 end
cancel_slot(agent_key, pending_slot_key, due_key, pending_slot_run_id, pending_slot_ref)
redis.call('DEL', agent_key, recent_runs_key)
redis.call('ZREM', agents_key, agent_id)
redis.call('SREM', schedules_key, agent_id)
redis.call('SREM', paused_key, agent_id)
return 1
