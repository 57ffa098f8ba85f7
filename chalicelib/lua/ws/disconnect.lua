-- Forget a connection and every subscription it had.
-- KEYS[1] connection hash   KEYS[2] connection's subscriptions set   KEYS[2+i] subscribers set of topic i
-- ARGV[1] connection id
for i = 3, #KEYS do redis.call('SREM', KEYS[i], ARGV[1]) end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
