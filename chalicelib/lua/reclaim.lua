-- Put items presumed lost (an SQS message that never came, a dispatcher that
-- died mid-delivery) back into the due index, due now. Their old claim token is
-- dropped, so a late SQS message for them finds nothing to claim.
-- KEYS[1] inflight zset   KEYS[2] due index zset   KEYS[2+i] hash of item i
-- ARGV[1] now ms   ARGV[1+i] ref of item i
-- Returns the number of items put back.
local now = tonumber(ARGV[1])
local count = 0
for i = 1, #KEYS - 2 do
  local ref = ARGV[1 + i]
  local score = redis.call('ZSCORE', KEYS[1], ref)
  if score and tonumber(score) <= now then
    redis.call('ZREM', KEYS[1], ref)
    local hash = KEYS[2 + i]
    local status = redis.call('HGET', hash, 'status')
    if status == 'queued' or status == 'delivering' then
      redis.call('HSET', hash, 'status', 'scheduled')
      redis.call('HDEL', hash, 'token')
      redis.call('ZADD', KEYS[2], now, ref)
      count = count + 1
    end
  end
end
return count
