-- Record a new WebSocket connection.
-- KEYS[1] connection hash
-- ARGV[1] connection id   ARGV[2] now ms   ARGV[3] idle expiry seconds
-- ARGV[4] the protocol it speaks: json | socketio
-- Returns 1.
local connection_key = KEYS[1]
local connection_id = ARGV[1]
local now_ms = ARGV[2]
local expiry_seconds = ARGV[3]
local protocol = ARGV[4]

redis.call('HSET', connection_key, 'id', connection_id, 'connectedAt', now_ms, 'protocol', protocol)
redis.call('EXPIRE', connection_key, expiry_seconds)
return 1
