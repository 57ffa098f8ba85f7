-- Unsubscribe a connection from a topic.
-- KEYS[1] connection's subscriptions set   KEYS[2] topic's subscribers set
-- ARGV[1] connection id   ARGV[2] topic
-- Returns 1.
local subscriptions_key = KEYS[1]
local topic_key = KEYS[2]
local connection_id = ARGV[1]
local topic = ARGV[2]

redis.call('SREM', topic_key, connection_id)
redis.call('SREM', subscriptions_key, topic)
return 1
