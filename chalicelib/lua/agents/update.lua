-- Change an existing agent's fields.
-- KEYS[1] agent hash
-- ARGV[1] now ms   ARGV[2..] field, value pairs
-- Returns 1 when updated, 0 when the agent does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'updatedAt', ARGV[1])
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
