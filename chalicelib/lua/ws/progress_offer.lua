-- A run's progress report, coalesced: at most one goes out per window, and the last one held
-- goes out when the window ends (progress_take.lua), so a burst costs one send plus one.
-- KEYS[1] the run's progress hash (sentAt: ms of the last send; pending: the report held;
--         queued: a trailing send is on its way)
-- ARGV[1] now ms   ARGV[2] window ms   ARGV[3] the report's event data (JSON)
-- ARGV[4] how long the hash outlives its last change (ms)
-- Returns 'send' (send it now), 'held' (kept for the trailing send already queued) or the ms at
-- which a trailing send is due (the caller queues one).
local progress_key = KEYS[1]
local now_ms = ARGV[1]
local window_ms = ARGV[2]
local report_json = ARGV[3]
local hold_ms = ARGV[4]

local now = tonumber(now_ms)
local sent_at = tonumber(redis.call('HGET', progress_key, 'sentAt') or '')
local answer
if sent_at == nil or now - sent_at >= tonumber(window_ms) then
  -- Newer than anything held: a trailing send still queued finds nothing left to send.
  redis.call('HSET', progress_key, 'sentAt', now_ms)
  redis.call('HDEL', progress_key, 'pending')
  answer = 'send'
else
  redis.call('HSET', progress_key, 'pending', report_json)
  if redis.call('HSETNX', progress_key, 'queued', 1) == 0 then
    answer = 'held'
  else
    answer = tostring(sent_at + tonumber(window_ms))
  end
end
redis.call('PEXPIRE', progress_key, hold_ms)
return answer
