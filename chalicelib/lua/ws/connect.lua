--#include lib
-- Record a new WebSocket connection, counted against the API token it was opened with.
-- KEYS[1] connection hash   KEYS[2] the token's connections zset   KEYS[3] the set of token ids
-- ARGV[1] connection id   ARGV[2] now ms   ARGV[3] idle expiry seconds
-- ARGV[4] the protocol it speaks: json | socketio
-- ARGV[5] the id of its token ('' for a Socket.IO connection: it authenticates later, and is
--         counted then, by authenticate.lua)
-- ARGV[6] connections one token may hold (0: no cap)
-- ARGV[7] ms before which a counted connection is stale   ARGV[8] the zset's expiry seconds
-- Returns 1, or 0 (nothing recorded) when the token holds its cap of connections.
local connection_key = KEYS[1]
local token_connections_key = KEYS[2]
local tokens_key = KEYS[3]
local connection_id = ARGV[1]
local now_ms = ARGV[2]
local expiry_seconds = ARGV[3]
local protocol = ARGV[4]
local token_id = ARGV[5]
local max_connections = ARGV[6]
local stale_before_ms = ARGV[7]
local hold_seconds = ARGV[8]

redis.call('HSET', connection_key, 'id', connection_id, 'connectedAt', now_ms, 'protocol', protocol)
redis.call('EXPIRE', connection_key, expiry_seconds)
if token_id ~= '' and not admit(token_connections_key, tokens_key, connection_key, connection_id,
                                token_id, now_ms, max_connections, stale_before_ms, hold_seconds) then
  redis.call('DEL', connection_key)
  return 0
end
return 1
