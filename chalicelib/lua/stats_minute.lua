-- One minute's stats bucket (see stats.py): a hash of counts that expires `ttl_seconds` after
-- its first count, so the buckets held stay bounded whatever the traffic.
local function count_minute(minute_key, field, ttl_seconds)
  redis.call('HINCRBY', minute_key, field, 1)
  if redis.call('TTL', minute_key) < 0 then redis.call('EXPIRE', minute_key, ttl_seconds) end
end
