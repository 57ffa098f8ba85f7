-- Record an agent's progress report on its running run.
-- KEYS[1] run hash
-- ARGV[1] agent id   ARGV[2] token   ARGV[3] progress json
-- ARGV[4] the token's kind (see report_checks.lua): 'callback', the agent's own
-- Returns 1; 0 unknown run; -1 finished run; -2 not running; -3 wrong token.
--#include report_checks
local run_key = KEYS[1]
local agent_id = ARGV[1]
local token = ARGV[2]
local progress_json = ARGV[3]
local token_kind = ARGV[4]

local refusal = report_checks(run_key, agent_id, token, token_kind)
if refusal then return refusal end
redis.call('HSET', run_key, 'progress', progress_json)
return 1
