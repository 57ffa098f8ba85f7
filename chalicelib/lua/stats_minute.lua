-- One minute's stats bucket (see stats.py): a hash of counts that expires `ttl_seconds` after
-- its last new field (all within its minute), so the buckets held stay bounded whatever the
-- traffic. Its first count creates a field, so every bucket gets its expiry.
local function count_minute(minute_key, field, ttl_seconds)
  if redis.call('HINCRBY', minute_key, field, 1) == 1 then redis.call('EXPIRE', minute_key, ttl_seconds) end
end
