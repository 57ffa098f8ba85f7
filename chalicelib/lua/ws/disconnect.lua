-- Forget a connection, every subscription it had, and its place in its token's count.
-- KEYS[1] connection hash   KEYS[2] connection's subscriptions set
-- KEYS[3] its token's connections zset (any key of the slot when it was never counted)
-- ARGV[1] connection id
-- Then, for each topic i it subscribed to (from 1): KEYS[3+i] the topic's subscribers set.
-- Returns 1.
local connection_key = KEYS[1]
local subscriptions_key = KEYS[2]
local token_connections_key = KEYS[3]
local connection_id = ARGV[1]

for i = 4, #KEYS do redis.call('SREM', KEYS[i], connection_id) end
redis.call('ZREM', token_connections_key, connection_id)
redis.call('DEL', connection_key, subscriptions_key)
return 1
