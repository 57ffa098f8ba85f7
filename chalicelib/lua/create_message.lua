-- Store a new webhook message and index it, unless its id is taken.
-- KEYS[1] message hash        KEYS[2] pending-messages zset
-- KEYS[3] due index zset      KEYS[4] inflight zset
-- KEYS[5] the sweep marker of the message's due second (used in 'sweep' mode)
-- ARGV[1] id   ARGV[2] webhook url   ARGV[3] payload json   ARGV[4] due ms
-- ARGV[5] now ms   ARGV[6] ref in the due index
-- ARGV[7] how it reaches SQS:
--   'tick'  the due index only: a later tick claims it
--   'claim' claimed now, the caller sends it (due too soon for anything else)
--   'sweep' due inside the window the current tick already covered: it waits in the due
--           index, and the first message of its second asks for a sweep of that second
--           (one SQS message for all of them); once the second is swept, it is claimed now
-- ARGV[8] claim token   ARGV[9] inflight deadline ms (when claimed)
-- ARGV[10] how long a new sweep marker lives (ms)
-- Returns 0 when the id exists; else 1 (waits in the due index), 2 (claimed: send it)
-- or 3 (first of its second: send the sweep).
--#include sweep_marker
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local mode = ARGV[7]
local result = 1
if mode == 'sweep' then
  local state = ask_sweep(KEYS[5], ARGV[10])
  if state == 'ask' then
    result = 3
  elseif state == 'swept' then
    mode = 'claim'
  end
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'url', ARGV[2], 'payload', ARGV[3],
  'due', ARGV[4], 'createdAt', ARGV[5], 'status', 'scheduled', 'attempts', 0)
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
if mode == 'claim' then
  redis.call('HSET', KEYS[1], 'status', 'queued', 'token', ARGV[8], 'nextAttemptAt', ARGV[4])
  redis.call('ZADD', KEYS[4], ARGV[9], ARGV[6])
  return 2
end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[6])
return result
