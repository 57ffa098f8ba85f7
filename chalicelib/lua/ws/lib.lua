-- Helpers shared by the WebSocket scripts, included by each that starts with `--#include lib`.
-- They read no KEYS or ARGV: the script that includes them passes what it bound.

-- Count a connection against the API token it was opened with, unless that token holds
-- `max_connections` already (0: no cap). Entries older than `stale_before_ms` are connections
-- that outlived API Gateway's 2-hour limit without a $disconnect reaching us: not counted.
-- Returns true when admitted (or already counted), false when the cap is reached.
local function admit(token_connections_key, tokens_key, connection_key, connection_id, token_id,
                     now_ms, max_connections, stale_before_ms, hold_seconds)
  redis.call('ZREMRANGEBYSCORE', token_connections_key, '-inf', '(' .. stale_before_ms)
  local cap = tonumber(max_connections)
  local counted = redis.call('ZSCORE', token_connections_key, connection_id)
  if cap > 0 and not counted and redis.call('ZCARD', token_connections_key) >= cap then
    return false
  end
  redis.call('ZADD', token_connections_key, now_ms, connection_id)
  redis.call('EXPIRE', token_connections_key, hold_seconds)
  redis.call('SADD', tokens_key, token_id)
  redis.call('HSET', connection_key, 'token', token_id)
  return true
end
