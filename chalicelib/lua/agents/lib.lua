-- Helpers shared by the agent scripts; scripts.py prepends this file to each
-- script that starts with `--#include lib`. Every key still comes from KEYS.

-- Ready-queue score: higher priority first, then earlier due time.
local function ready_score(priority, due)
  return string.format('%.0f', (4 - tonumber(priority or 2)) * 1e13 + tonumber(due))
end

-- Create the pending run for an agent's next cron slot and index it as due.
local function create_slot(run_key, due_key, agent_key, agent_id, run_id, ref, slot_ms, now)
  local prio, job = unpack(redis.call('HMGET', agent_key, 'priority', 'jobId'))
  redis.call('HSET', run_key, 'runId', run_id, 'agentId', agent_id, 'jobId', job or agent_id,
    'trigger', 'cron', 'status', 'scheduled', 'attempt', 1, 'scheduledFor', slot_ms,
    'priority', prio or 2, 'createdAt', now)
  redis.call('ZADD', due_key, slot_ms, ref)
  redis.call('HSET', agent_key, 'slotRun', run_id, 'nextRunAt', slot_ms)
end

-- Forget the agent's pending slot. The slot's run, if already on its way,
-- finds itself stale when it fires and removes itself.
local function cancel_slot(agent_key)
  redis.call('HDEL', agent_key, 'slotRun', 'nextRunAt')
end

-- Record a run in the agent's recent-runs list, keeping the newest 100.
local function remember_run(runs_key, run_id, now)
  redis.call('ZADD', runs_key, now, run_id)
  redis.call('ZREMRANGEBYRANK', runs_key, 0, -101)
end
