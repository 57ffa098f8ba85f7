-- Checks that an agent's report concerns a run it may report on. Included by
-- progress.lua and finish_run.lua (KEYS[1] run hash, ARGV[1] agent id,
-- ARGV[2] token: the callback token, or the claim token with ARGV[#ARGV] = 'claim' or 'lease').
local r_status, r_agent, r_callback, r_claim = unpack(redis.call('HMGET', KEYS[1],
  'status', 'agentId', 'callbackToken', 'token'))
if not r_status or r_agent ~= ARGV[1] then return 0 end
local expected = r_callback
if ARGV[#ARGV] == 'claim' or ARGV[#ARGV] == 'lease' then expected = r_claim end
-- The token first: a caller without it learns nothing of the run. A finished run keeps its
-- last callback token, so its own agent's late report is told the run has finished.
if not expected or expected ~= ARGV[2] then return -3 end
if r_status == 'completed' or r_status == 'failed' or r_status == 'skipped' then return -1 end
if r_status ~= 'running' then return -2 end
