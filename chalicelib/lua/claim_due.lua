-- Move items that fall due out of the due index and mark them handed to SQS.
-- Each ref is re-checked here, so concurrent ticks never claim an item twice.
-- KEYS[1] due index zset   KEYS[2] inflight zset
-- KEYS[3] message counts hash (each message claimed counts as queued)
-- ARGV[1] claim up to this due time (ms)   ARGV[2] queue grace (ms)
-- Then, for each item i (from 1): KEYS[3+i] its hash;
-- ARGV[1+2i] its ref   ARGV[2+2i] a fresh claim token for it.
-- Returns a flat list: ref, due ms, token, target URL ('' for a run) and flow-control key ('' for
-- none) for each item claimed.
--#include variadic
local due_key = KEYS[1]
local inflight_key = KEYS[2]
local message_counts_key = KEYS[3]
local until_ms = ARGV[1]
local grace_ms = ARGV[2]

local limit = tonumber(until_ms)
local grace = tonumber(grace_ms)
local refs = {}
for i = 1, #KEYS - 3 do refs[i] = ARGV[1 + 2 * i] end
-- The whole batch is read, and leaves the due index, in one command each: what a command costs
-- Redis beyond its own work is most of what a small one costs.
local scores = variadic('ZMSCORE', due_key, refs)
local due = {}
for i = 1, #refs do
  if scores[i] and tonumber(scores[i]) <= limit then due[#due + 1] = i end
end
local leaving = {}
for n, i in ipairs(due) do leaving[n] = refs[i] end
variadic('ZREM', due_key, leaving)

local claimed = {}
local inflight = {}
local messages = 0
for _, i in ipairs(due) do
  local ref = refs[i]
  local token = ARGV[2 + 2 * i]
  local score = scores[i]
  local hash = KEYS[3 + i]
  -- Every item's hash holds its status: none means the item is gone.
  local item = redis.call('HMGET', hash, 'status', 'url', 'flowKey')
  if item[1] then
    if string.sub(ref, 1, 2) == 'm:' then messages = messages + 1 end
    redis.call('HSET', hash, 'status', 'queued', 'token', token, 'nextAttemptAt', score)
    inflight[#inflight + 1] = tonumber(score) + grace
    inflight[#inflight + 1] = ref
    claimed[#claimed + 1] = ref
    claimed[#claimed + 1] = score
    claimed[#claimed + 1] = token
    claimed[#claimed + 1] = item[2] or ''
    claimed[#claimed + 1] = item[3] or ''
  end
end
variadic('ZADD', inflight_key, inflight)
if messages > 0 then redis.call('HINCRBY', message_counts_key, 'queued', messages) end
return claimed
