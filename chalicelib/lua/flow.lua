-- Flow control and circuit breakers, shared by begin_delivery.lua and finish_delivery.lua.

-- Keep `key` at least `ttl_ms` longer (never shorten what another use of it needs).
local function keep_for(key, ttl_ms)
  if redis.call('PTTL', key) < ttl_ms then redis.call('PEXPIRE', key, ttl_ms) end
end

-- Whether a destination's breaker lets a call through now: 'closed'; 'probe' (its cool-down
-- has passed and no other probe is under way: this call is the one probe); or 'open', with
-- when a probe may next go (ms).
local function breaker_admits(breaker_key, ref, now)
  local open_until = tonumber(redis.call('HGET', breaker_key, 'openUntil') or '0')
  if open_until == 0 then return 'closed', 0 end
  if open_until > now then return 'open', open_until end
  local probe = redis.call('HMGET', breaker_key, 'probeUntil', 'probe')
  local probe_until = tonumber(probe[1] or '0')
  if probe_until > now and probe[2] ~= ref then return 'open', probe_until end
  return 'probe', 0
end

-- A rate of `rate` starts a second, as a generic cell rate algorithm: `tat` is when the next
-- start would be due were starts evenly spaced, and a start is allowed while that is at most a
-- second minus one interval ahead (so up to `rate` starts fall in any one second). Returns now
-- (and takes the start) or the moment the next start is allowed.
local function rate_admits(state_key, rate, now)
  local interval = math.ceil(1000 / rate)
  local tolerance = math.max(0, 1000 - interval)
  local tat = math.max(tonumber(redis.call('HGET', state_key, 'tat') or '0'), now)
  if tat - now > tolerance then return tat - tolerance end
  redis.call('HSET', state_key, 'tat', tat + interval)
  keep_for(state_key, tat + interval - now + 60000)
  return now
end

-- Count a call's outcome against its destination: 'ok' closes the breaker; 'limited' (a 429)
-- leaves it as it is; 'fail' lengthens the streak of failures, and opens the breaker at
-- `threshold` in a row, or again when the failure was its probe's. Each opening waits twice the
-- one before, from `cooldown_ms` up to `max_cooldown_ms`. Calls and failures are counted per
-- minute (fields c<minute> and f<minute>); the first call of a minute drops the counts older
-- than the minute before, keeps the hash another hour and notes the destination as called.
local function breaker_record(breaker_key, destinations_key, dest, ref, health, now, threshold,
                              cooldown_ms, max_cooldown_ms)
  local minute = math.floor(now / 60000)
  if redis.call('HINCRBY', breaker_key, 'c' .. minute, 1) == 1 then
    for _, field in ipairs(redis.call('HKEYS', breaker_key)) do
      local counted = tonumber(string.match(field, '^[cf](%d+)$'))
      if counted and counted < minute - 1 then redis.call('HDEL', breaker_key, field) end
    end
    redis.call('PEXPIRE', breaker_key, 3600000)
    redis.call('ZADD', destinations_key, minute * 60000, dest)
    redis.call('ZREMRANGEBYSCORE', destinations_key, '-inf', now - 3600000)
  end
  if health == 'ok' then
    if redis.call('HEXISTS', breaker_key, 'streak') == 1 then
      redis.call('HDEL', breaker_key, 'streak', 'openUntil', 'opens', 'probe', 'probeUntil')
    end
  elseif health == 'fail' then
    redis.call('HINCRBY', breaker_key, 'f' .. minute, 1)
    local streak = redis.call('HINCRBY', breaker_key, 'streak', 1)
    local breaker = redis.call('HMGET', breaker_key, 'probe', 'openUntil')
    local was_probe = breaker[1] == ref
    local limit = tonumber(threshold)  -- 0: the breaker never opens
    if was_probe or (not breaker[2] and limit > 0 and streak >= limit) then
      local opens = redis.call('HINCRBY', breaker_key, 'opens', 1)
      local wait = math.min(tonumber(cooldown_ms) * 2 ^ math.min(opens - 1, 20), tonumber(max_cooldown_ms))
      redis.call('HSET', breaker_key, 'openUntil', now + wait)
      redis.call('HDEL', breaker_key, 'probe', 'probeUntil')
    end
  end
end
