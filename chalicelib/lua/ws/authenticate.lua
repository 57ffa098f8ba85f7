--#include lib
-- A Socket.IO connection sent a valid CONNECT packet: count it against its token.
-- KEYS[1] connection hash   KEYS[2] the token's connections zset   KEYS[3] the set of token ids
-- ARGV[1] connection id   ARGV[2] the id of its token   ARGV[3] now ms
-- ARGV[4] connections one token may hold (0: no cap)
-- ARGV[5] ms before which a counted connection is stale   ARGV[6] the zset's expiry seconds
-- Returns 1, 0 when the token holds its cap of connections, -1 when the connection is gone.
local connection_key = KEYS[1]
local token_connections_key = KEYS[2]
local tokens_key = KEYS[3]
local connection_id = ARGV[1]
local token_id = ARGV[2]
local now_ms = ARGV[3]
local max_connections = ARGV[4]
local stale_before_ms = ARGV[5]
local hold_seconds = ARGV[6]

if redis.call('EXISTS', connection_key) == 0 then return -1 end
if not admit(token_connections_key, tokens_key, connection_key, connection_id, token_id, now_ms,
             max_connections, stale_before_ms, hold_seconds) then
  return 0
end
redis.call('HSET', connection_key, 'authenticatedAt', now_ms)
return 1
