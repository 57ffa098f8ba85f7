-- Give waiting runs a concurrency slot, best first, while slots are free.
-- The candidates were read from the ready queue just before; each is
-- re-checked here, so concurrent starters never exceed the limit.
-- KEYS[1] ready zset   KEYS[2] running zset   KEYS[2+i] run hash of candidate i
-- ARGV[1] max concurrent runs   ARGV[2] lease deadline ms for a start in flight
-- ARGV[1+2i] run id of candidate i   ARGV[2+2i] fresh claim token for it
-- Returns a flat list: run id, claim token for each run started.
local started = {}
local limit = tonumber(ARGV[1])
for i = 1, #KEYS - 2 do
  if redis.call('ZCARD', KEYS[2]) >= limit then break end
  local run_id = ARGV[1 + 2 * i]
  if redis.call('ZREM', KEYS[1], run_id) == 1 then
    redis.call('ZADD', KEYS[2], ARGV[2], run_id)
    redis.call('HSET', KEYS[2 + i], 'status', 'starting', 'token', ARGV[2 + 2 * i])
    table.insert(started, run_id)
    table.insert(started, ARGV[2 + 2 * i])
  end
end
return started
