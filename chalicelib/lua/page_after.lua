-- One page of a zset, in (score, member) order, strictly after a cursor.
-- The cursor member is added for the instant of the lookup when it has left
-- the set, so its rank is exact even when many members share its score.
-- KEYS[1] zset
-- ARGV[1] cursor score   ARGV[2] cursor member   ARGV[3] page size
-- Returns a flat member, score list.
local added = false
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
  added = true
end
local first = redis.call('ZRANK', KEYS[1], ARGV[2]) + 1
if added then
  -- Removing it again moves everything after it down one place.
  redis.call('ZREM', KEYS[1], ARGV[2])
  first = first - 1
end
return redis.call('ZRANGE', KEYS[1], first, first + tonumber(ARGV[3]) - 1, 'WITHSCORES')
