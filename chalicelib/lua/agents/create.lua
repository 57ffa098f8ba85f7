-- Register an agent unless its id is taken.
-- KEYS[1] agent hash   KEYS[2] agents zset
-- ARGV[1] agent id   ARGV[2] now ms   ARGV[3..] field, value pairs
-- Returns 1 when created, 0 when the id exists.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'createdAt', ARGV[2], 'updatedAt', ARGV[2], 'status', 'IDLE')
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
