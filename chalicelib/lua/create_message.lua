-- Store a new webhook message and index it, unless its id is taken.
-- KEYS[1] message hash        KEYS[2] pending-messages zset
-- KEYS[3] due index zset      KEYS[4] inflight zset
-- ARGV[1] id   ARGV[2] webhook url   ARGV[3] payload json   ARGV[4] due ms
-- ARGV[5] now ms   ARGV[6] ref in the due index
-- ARGV[7] claim token: '' leaves it in the due index for the tick; otherwise the
--         message is handed straight to SQS (due inside the current window)
-- ARGV[8] inflight deadline (ms) when claimed now
-- Returns 1 when created, 0 when the id exists.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local status = 'scheduled'
if ARGV[7] ~= '' then status = 'queued' end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'url', ARGV[2], 'payload', ARGV[3],
  'due', ARGV[4], 'createdAt', ARGV[5], 'status', status, 'attempts', 0)
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
if ARGV[7] == '' then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[6])
else
  redis.call('HSET', KEYS[1], 'token', ARGV[7], 'nextAttemptAt', ARGV[4])
  redis.call('ZADD', KEYS[4], ARGV[8], ARGV[6])
end
return 1
