-- The attempt log a message or run hash keeps in its field `attemptLog` (see attempt_log.py):
-- one line per attempt, oldest first, the last `size` kept.
local function log_attempt(hash_key, entry, size)
  local log = redis.call('HGET', hash_key, 'attemptLog')
  if log then
    local _, newlines = string.gsub(log, '\n', '')
    -- Lines held (newlines + 1) and this one, beyond the size: dropped from the front.
    local from = 1
    for _ = 1, newlines + 2 - tonumber(size) do from = string.find(log, '\n', from, true) + 1 end
    entry = string.sub(log, from) .. '\n' .. entry
  end
  redis.call('HSET', hash_key, 'attemptLog', entry)
end
