-- Helpers shared by the agent scripts, included by each that starts with `--#include lib`.
-- They read no KEYS or ARGV: the script that includes them passes what it bound.

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

-- Forget the agent's pending slot. A slot still waiting in the due index goes with its run:
-- the caller read the slot's id (slot_id, '' for none) before the script and passed its hash
-- and ref, so it is dropped only while it is still the agent's slot. A slot already handed
-- to SQS finds itself stale when it fires and removes itself.
local function cancel_slot(agent_key, slot_key, due_key, slot_id, slot_ref)
  if slot_id ~= '' and redis.call('HGET', agent_key, 'slotRun') == slot_id
      and redis.call('HGET', slot_key, 'status') == 'scheduled' then
    redis.call('ZREM', due_key, slot_ref)
    redis.call('DEL', slot_key)
  end
  redis.call('HDEL', agent_key, 'slotRun', 'nextRunAt')
end

-- Record a run in the agent's recent-runs list, keeping the newest 100.
local function remember_run(runs_key, run_id, now)
  redis.call('ZADD', runs_key, now, run_id)
  redis.call('ZREMRANGEBYRANK', runs_key, 0, -101)
end

-- A dispatcher takes a run that holds a concurrency slot and is about to call its agent: the
-- run is running until its lease (the agent's timeout), and reports need callback_token.
local function begin_run(run_key, agent_key, running_key, run_id, now, lease, callback_token)
  redis.call('HSET', run_key, 'status', 'running', 'startedAt', now, 'callbackToken', callback_token)
  redis.call('HDEL', run_key, 'finishedAt', 'progress')
  redis.call('ZADD', running_key, lease, run_id)
  redis.call('HSET', agent_key, 'status', 'RUNNING', 'lastRunAt', now)
end
