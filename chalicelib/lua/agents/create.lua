-- Register an agent unless its id is taken.
-- KEYS[1] agent hash   KEYS[2] agents zset
-- ARGV[1] agent id   ARGV[2] now ms
-- Then the agent's fields: ARGV[3..] field, value pairs.
-- Returns 1 when created, 0 when the id exists.
local agent_key = KEYS[1]
local agents_key = KEYS[2]
local agent_id = ARGV[1]
local now_ms = ARGV[2]

if redis.call('EXISTS', agent_key) == 1 then return 0 end
redis.call('HSET', agent_key, 'id', agent_id, 'createdAt', now_ms, 'updatedAt', now_ms, 'status', 'IDLE')
for i = 3, #ARGV, 2 do redis.call('HSET', agent_key, ARGV[i], ARGV[i + 1]) end
redis.call('ZADD', agents_key, now_ms, agent_id)
return 1
