--#include lib
-- Move an agent's pending cron slot to a new instant: its time zone changed under it.
-- KEYS[1] agent hash   KEYS[2] due index   KEYS[3] hash for the new slot's run
-- KEYS[4] the pending slot's run hash
-- ARGV[1] agent id   ARGV[2] now ms   ARGV[3] the pending slot's run id   ARGV[4] its ref
-- ARGV[5] new slot ms   ARGV[6] new slot run id   ARGV[7] new slot ref
-- Returns 1 when moved, 0 when that slot is no longer the agent's pending one (it fired, or
-- the schedule changed meanwhile: whatever changed it computed its own next slot).
if ARGV[3] == '' or redis.call('HGET', KEYS[1], 'slotRun') ~= ARGV[3] then return 0 end
cancel_slot(KEYS[1], KEYS[4], KEYS[2], ARGV[3], ARGV[4])
create_slot(KEYS[3], KEYS[2], KEYS[1], ARGV[1], ARGV[6], ARGV[7], ARGV[5], ARGV[2])
return 1
