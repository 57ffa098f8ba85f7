-- Give waiting runs a concurrency slot, best first, while slots are free.
-- The candidates were read from the ready queue just before; each is
-- re-checked here, so concurrent starters never exceed the limit.
-- KEYS[1] ready zset   KEYS[2] running zset
-- ARGV[1] max concurrent runs   ARGV[2] lease deadline ms for a start in flight
-- Then, for each candidate i (from 1): KEYS[2+i] its run hash;
-- ARGV[1+2i] its run id   ARGV[2+2i] a fresh claim token for it.
-- Returns a flat list: run id, claim token for each run started.
local ready_key = KEYS[1]
local running_key = KEYS[2]
local max_running = ARGV[1]
local start_lease_deadline_ms = ARGV[2]

local started = {}
local limit = tonumber(max_running)
for i = 1, #KEYS - 2 do
  if redis.call('ZCARD', running_key) >= limit then break end
  local run_id = ARGV[1 + 2 * i]
  local claim_token = ARGV[2 + 2 * i]
  -- A ready entry whose run hash is gone is dropped, not started: writing its status would
  -- leave a stub run (no agent, no due time) holding a concurrency slot.
  if redis.call('ZREM', ready_key, run_id) == 1 and redis.call('EXISTS', KEYS[2 + i]) == 1 then
    redis.call('ZADD', running_key, start_lease_deadline_ms, run_id)
    redis.call('HSET', KEYS[2 + i], 'status', 'starting', 'token', claim_token)
    table.insert(started, run_id)
    table.insert(started, claim_token)
  end
end
return started
