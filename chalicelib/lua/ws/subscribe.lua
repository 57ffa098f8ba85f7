-- Subscribe a live connection to a topic, and keep its records alive.
-- KEYS[1] connection hash   KEYS[2] connection's subscriptions set   KEYS[3] topic's subscribers set
-- ARGV[1] connection id   ARGV[2] topic   ARGV[3] expiry seconds for the connection's records
-- ARGV[4] expiry seconds for the topic set (the longest a connection can live)
-- Returns 1, or 0 when the connection is unknown (expired or gone).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
