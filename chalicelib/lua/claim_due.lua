-- Move items that fall due out of the due index and mark them handed to SQS.
-- Each ref is re-checked here, so concurrent ticks never claim an item twice.
-- KEYS[1] due index zset   KEYS[2] inflight zset
-- KEYS[3] message counts hash (each message claimed counts as queued)
-- ARGV[1] claim up to this due time (ms)   ARGV[2] queue grace (ms)
-- Then, for each item i (from 1): KEYS[3+i] its hash;
-- ARGV[1+2i] its ref   ARGV[2+2i] a fresh claim token for it.
-- Returns a flat list: ref, due ms, token, target URL ('' for a run) and flow-control key ('' for
-- none) for each item claimed.
local due_key = KEYS[1]
local inflight_key = KEYS[2]
local message_counts_key = KEYS[3]
local until_ms = ARGV[1]
local grace_ms = ARGV[2]

local claimed = {}
local limit = tonumber(until_ms)
local grace = tonumber(grace_ms)
local messages = 0
for i = 1, #KEYS - 3 do
  local ref = ARGV[1 + 2 * i]
  local token = ARGV[2 + 2 * i]
  local score = redis.call('ZSCORE', due_key, ref)
  if score and tonumber(score) <= limit then
    redis.call('ZREM', due_key, ref)
    local hash = KEYS[3 + i]
    if redis.call('EXISTS', hash) == 1 then
      if string.sub(ref, 1, 2) == 'm:' then messages = messages + 1 end
      redis.call('HSET', hash, 'status', 'queued', 'token', token, 'nextAttemptAt', score)
      redis.call('ZADD', inflight_key, tonumber(score) + grace, ref)
      table.insert(claimed, ref)
      table.insert(claimed, score)
      table.insert(claimed, token)
      local where = redis.call('HMGET', hash, 'url', 'flowKey')
      table.insert(claimed, where[1] or '')
      table.insert(claimed, where[2] or '')
    end
  end
end
if messages > 0 then redis.call('HINCRBY', message_counts_key, 'queued', messages) end
return claimed
