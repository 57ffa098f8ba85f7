-- Move items that fall due out of the due index and mark them handed to SQS.
-- Each ref is re-checked here, so concurrent ticks never claim an item twice.
-- KEYS[1] due index zset   KEYS[2] inflight zset   KEYS[2+i] hash of item i
-- ARGV[1] claim up to this due time (ms)   ARGV[2] queue grace (ms)
-- ARGV[1+2i] ref of item i   ARGV[2+2i] fresh claim token for item i
-- Returns a flat list: ref, due ms, token for each item claimed.
local claimed = {}
local limit = tonumber(ARGV[1])
local grace = tonumber(ARGV[2])
for i = 1, #KEYS - 2 do
  local ref = ARGV[1 + 2 * i]
  local token = ARGV[2 + 2 * i]
  local score = redis.call('ZSCORE', KEYS[1], ref)
  if score and tonumber(score) <= limit then
    redis.call('ZREM', KEYS[1], ref)
    local hash = KEYS[2 + i]
    if redis.call('EXISTS', hash) == 1 then
      redis.call('HSET', hash, 'status', 'queued', 'token', token, 'nextAttemptAt', score)
      redis.call('ZADD', KEYS[2], tonumber(score) + grace, ref)
      table.insert(claimed, ref)
      table.insert(claimed, score)
      table.insert(claimed, token)
    end
  end
end
return claimed
