-- Unsubscribe a connection from a topic.
-- KEYS[1] connection's subscriptions set   KEYS[2] topic's subscribers set
-- ARGV[1] connection id   ARGV[2] topic
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[1], ARGV[2])
return 1
