-- One page of a zset, in (score, member) order, strictly after a cursor.
-- The cursor member is added for the instant of the lookup when it has left
-- the set, so its rank is exact even when many members share its score.
-- KEYS[1] zset
-- ARGV[1] cursor score   ARGV[2] cursor member   ARGV[3] page size
-- Returns a flat member, score list.
local zset_key = KEYS[1]
local cursor_score = ARGV[1]
local cursor_member = ARGV[2]
local page_size = ARGV[3]

local added = false
if not redis.call('ZSCORE', zset_key, cursor_member) then
  redis.call('ZADD', zset_key, cursor_score, cursor_member)
  added = true
end
local first = redis.call('ZRANK', zset_key, cursor_member) + 1
if added then
  -- Removing it again moves everything after it down one place.
  redis.call('ZREM', zset_key, cursor_member)
  first = first - 1
end
return redis.call('ZRANGE', zset_key, first, first + tonumber(page_size) - 1, 'WITHSCORES')
