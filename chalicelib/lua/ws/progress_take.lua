-- Take a run's held progress report, to send now: its trailing send, or the run ended (its last
-- report goes out before the event that ends it).
-- KEYS[1] the run's progress hash (see progress_offer.lua)
-- ARGV[1] now ms
-- ARGV[2] 'trailing' (the queued send: it may be queued again) or 'end' (the hash goes)
-- Returns the held report's event data (JSON), or false when none is held.
local progress_key = KEYS[1]
local now_ms = ARGV[1]
local why = ARGV[2]

local pending = redis.call('HGET', progress_key, 'pending')
if why == 'end' then
  redis.call('DEL', progress_key)
  return pending
end
redis.call('HDEL', progress_key, 'pending', 'queued')
if pending then redis.call('HSET', progress_key, 'sentAt', now_ms) end
return pending
