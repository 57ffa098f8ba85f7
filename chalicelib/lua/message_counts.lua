-- How many messages are `queued` and `delivering` (keys.message_counts), moved on each
-- transition. A count never goes below zero: messages already under way when the counters were
-- introduced were never counted up, and their transitions must not leave a count short for good.
local function count_down(counts_key, field)
  if tonumber(redis.call('HGET', counts_key, field) or '0') > 0 then
    redis.call('HINCRBY', counts_key, field, -1)
  end
end
