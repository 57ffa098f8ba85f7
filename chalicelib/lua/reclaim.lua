-- Put items presumed lost (an SQS message that never came, a dispatcher that
-- died mid-delivery) back into the due index, due now. Their old claim token is
-- dropped, so a late SQS message for them finds nothing to claim.
-- KEYS[1] inflight zset   KEYS[2] due index zset   KEYS[3] message counts hash
-- ARGV[1] now ms
-- Then, for each item i (from 1): KEYS[3+i] its hash;   ARGV[1+i] its ref.
-- Returns the number of items put back.
--#include message_counts
local inflight_key = KEYS[1]
local due_key = KEYS[2]
local message_counts_key = KEYS[3]
local now_ms = ARGV[1]

local now = tonumber(now_ms)
local count = 0
for i = 1, #KEYS - 3 do
  local ref = ARGV[1 + i]
  local score = redis.call('ZSCORE', inflight_key, ref)
  if score and tonumber(score) <= now then
    redis.call('ZREM', inflight_key, ref)
    local hash = KEYS[3 + i]
    local status = redis.call('HGET', hash, 'status')
    if status == 'queued' or status == 'delivering' then
      if string.sub(ref, 1, 2) == 'm:' then count_down(message_counts_key, status) end
      redis.call('HSET', hash, 'status', 'scheduled')
      redis.call('HDEL', hash, 'token')
      redis.call('ZADD', due_key, now, ref)
      count = count + 1
    end
  end
end
return count
