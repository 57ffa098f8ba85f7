-- Record a new WebSocket connection.
-- KEYS[1] connection hash
-- ARGV[1] connection id   ARGV[2] now ms   ARGV[3] idle expiry seconds
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'connectedAt', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
