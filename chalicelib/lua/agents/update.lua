-- Change an existing agent's fields.
-- KEYS[1] agent hash
-- ARGV[1] now ms
-- Then the fields to change: ARGV[2..] field, value pairs.
-- Returns 1 when updated, 0 when the agent does not exist.
local agent_key = KEYS[1]
local now_ms = ARGV[1]

if redis.call('EXISTS', agent_key) == 0 then return 0 end
redis.call('HSET', agent_key, 'updatedAt', now_ms)
for i = 2, #ARGV, 2 do redis.call('HSET', agent_key, ARGV[i], ARGV[i + 1]) end
return 1
