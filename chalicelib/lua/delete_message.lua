-- Cancel a message (or forget a finished one) and remove it from every index.
-- KEYS[1] message hash   KEYS[2] pending-messages zset
-- KEYS[3] due index zset   KEYS[4] inflight zset
-- ARGV[1] message id   ARGV[2] ref
-- Returns 1 when deleted, 0 when unknown, -1 while a delivery is under way.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
if status == 'delivering' then return -1 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
return 1
