-- Forget a connection and every subscription it had.
-- KEYS[1] connection hash   KEYS[2] connection's subscriptions set
-- ARGV[1] connection id
-- Then, for each topic i it subscribed to (from 1): KEYS[2+i] the topic's subscribers set.
-- Returns 1.
local connection_key = KEYS[1]
local subscriptions_key = KEYS[2]
local connection_id = ARGV[1]

for i = 3, #KEYS do redis.call('SREM', KEYS[i], connection_id) end
redis.call('DEL', connection_key, subscriptions_key)
return 1
