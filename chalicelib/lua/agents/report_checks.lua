-- Whether an agent's report concerns a run it may report on, for progress.lua and
-- finish_run.lua: nil when it does, else the code to refuse it with (0 unknown run or another
-- agent's, -3 wrong token, -1 finished run, -2 not running). token_kind names the token the
-- caller holds: 'callback' (the agent's callback token), 'claim' or 'lease' (the claim token).
local function report_checks(run_key, agent_id, token, token_kind)
  local status, run_agent, callback_token, claim_token = unpack(redis.call('HMGET', run_key,
    'status', 'agentId', 'callbackToken', 'token'))
  if not status or run_agent ~= agent_id then return 0 end
  local expected = callback_token
  if token_kind == 'claim' or token_kind == 'lease' then expected = claim_token end
  -- The token first: a caller without it learns nothing of the run. A finished run keeps its
  -- last callback token, so its own agent's late report is told the run has finished.
  if not expected or expected ~= token then return -3 end
  if status == 'completed' or status == 'failed' or status == 'skipped' then return -1 end
  if status ~= 'running' then return -2 end
  return nil
end
