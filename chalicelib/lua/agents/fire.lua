--#include lib
-- A run's SQS message came due: a cron slot fires, or a retry's backoff is over.
-- A slot schedules the next slot, then is skipped if the agent's previous run
-- is still going; otherwise the run waits in the ready queue for a slot.
-- KEYS[1] run hash   KEYS[2] agent hash   KEYS[3] due index   KEYS[4] inflight zset
-- KEYS[5] ready zset   KEYS[6] agent's recent-runs zset   KEYS[7] next slot's run hash
-- ARGV[1] run id   ARGV[2] claim token   ARGV[3] now ms   ARGV[4] this run's ref
-- ARGV[5] next slot ms ('' when the agent has no schedule)   ARGV[6] next slot run id
-- ARGV[7] next slot ref   ARGV[8] retention seconds for finished runs
-- KEYS[8] running zset   ARGV[9] max concurrent runs   ARGV[10] start lease deadline ms
-- ARGV[11] claim token for starting this run
-- ARGV[12] callback token: when given, a run that gets a slot is begun here (as begin_run.lua
--          would), so the dispatcher calls its agent without another round trip
-- ARGV[13] the agents' default timeout in seconds (the lease of a run begun here)
-- KEYS[9] the agent's WebSocket subscribers   KEYS[10] the scheduler's subscribers
-- Returns 'starting' (a slot was free and no better run waits: this dispatcher calls the
-- agent now, on its second), 'waiting', 'skipped', 'stale' or 'none' (nothing to claim); or,
-- for a run begun here, {'running', run hash, agent hash, the agent's subscribers, how many
-- subscribe to the scheduler} (hashes as flat lists), so its start event costs no round trip.
local status, token, trigger, attempt, agent_id, prio, due = unpack(redis.call('HMGET', KEYS[1],
  'status', 'token', 'trigger', 'attempt', 'agentId', 'priority', 'scheduledFor'))
if status ~= 'queued' or token ~= ARGV[2] then return 'none' end
redis.call('ZREM', KEYS[4], ARGV[4])
redis.call('HDEL', KEYS[1], 'token')
local slot_run, current = unpack(redis.call('HMGET', KEYS[2], 'slotRun', 'currentRun'))
if trigger == 'cron' and attempt == '1' then
  if slot_run ~= ARGV[1] then
    redis.call('DEL', KEYS[1])
    return 'stale'
  end
  if ARGV[5] ~= '' then
    create_slot(KEYS[7], KEYS[3], KEYS[2], agent_id, ARGV[6], ARGV[7], ARGV[5], ARGV[3])
  else
    redis.call('HDEL', KEYS[2], 'slotRun', 'nextRunAt')  -- the firing run was the last slot
  end
  remember_run(KEYS[6], ARGV[1], ARGV[3])
  if current then
    redis.call('HSET', KEYS[1], 'status', 'skipped', 'finishedAt', ARGV[3],
      'error', 'skipped: the previous run (' .. current .. ') was still in progress')
    redis.call('EXPIRE', KEYS[1], ARGV[8])
    return 'skipped'
  end
  redis.call('HSET', KEYS[2], 'currentRun', ARGV[1])
elseif current ~= ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 'stale'
end
local score = ready_score(prio, due)
local best = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
if redis.call('ZCARD', KEYS[8]) < tonumber(ARGV[9])
    and (#best == 0 or tonumber(best[2]) >= tonumber(score)) then
  -- As start_ready.lua would, without a trip through the ready queue and SQS.
  if ARGV[12] == '' then
    redis.call('ZADD', KEYS[8], ARGV[10], ARGV[1])
    redis.call('HSET', KEYS[1], 'status', 'starting', 'token', ARGV[11])
    return 'starting'
  end
  local timeout = tonumber(redis.call('HGET', KEYS[2], 'timeoutSeconds') or ARGV[13])
  redis.call('HSET', KEYS[1], 'token', ARGV[11])
  begin_run(KEYS[1], KEYS[2], KEYS[8], ARGV[1], ARGV[3], tonumber(ARGV[3]) + timeout * 1000, ARGV[12])
  return {'running', redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]),
    redis.call('SMEMBERS', KEYS[9]), redis.call('SCARD', KEYS[10])}
end
redis.call('HSET', KEYS[1], 'status', 'waiting')
redis.call('ZADD', KEYS[5], score, ARGV[1])
return 'waiting'
