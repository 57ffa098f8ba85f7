-- How many messages are `queued` and `delivering` (keys.message_counts), moved on each
-- transition. A count never stays below zero: messages already under way when the counters were
-- introduced were never counted up, and their transitions must not leave a count short for good.
local function count_down(counts_key, field)
  if redis.call('HINCRBY', counts_key, field, -1) < 0 then redis.call('HSET', counts_key, field, 0) end
end
