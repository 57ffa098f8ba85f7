--#include lib
-- Move an agent's pending cron slot to a new instant: its time zone changed under it.
-- KEYS[1] agent hash   KEYS[2] due index   KEYS[3] hash for the new slot's run
-- KEYS[4] the pending slot's run hash
-- ARGV[1] agent id   ARGV[2] now ms   ARGV[3] the pending slot's run id   ARGV[4] its ref
-- ARGV[5] new slot ms   ARGV[6] new slot run id   ARGV[7] new slot ref
-- Returns 1 when moved, 0 when that slot is no longer the agent's pending one (it fired, or
-- the schedule changed meanwhile: whatever changed it computed its own next slot).
local agent_key = KEYS[1]
local due_key = KEYS[2]
local next_slot_key = KEYS[3]
local pending_slot_key = KEYS[4]
local agent_id = ARGV[1]
local now_ms = ARGV[2]
local pending_slot_run_id = ARGV[3]
local pending_slot_ref = ARGV[4]
local next_slot_ms = ARGV[5]
local next_slot_run_id = ARGV[6]
local next_slot_ref = ARGV[7]

if pending_slot_run_id == '' or redis.call('HGET', agent_key, 'slotRun') ~= pending_slot_run_id then
  return 0
end
cancel_slot(agent_key, pending_slot_key, due_key, pending_slot_run_id, pending_slot_ref)
create_slot(next_slot_key, due_key, agent_key, agent_id, next_slot_run_id, next_slot_ref, next_slot_ms,
  now_ms)
return 1
