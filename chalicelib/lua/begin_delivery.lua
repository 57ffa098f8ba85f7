-- Claim a queued message for delivery: the SQS message's token must match.
-- A duplicate SQS message, a deleted message or a superseded token finds nothing to claim.
-- What may hold a delivery back, in order:
--   its flow is paused (a 429's Retry-After): postponed to the pause's end, no attempt spent;
--   its destination's circuit breaker is open: the attempt is spent without a call, and the
--     caller records it and plans its retry;
--   its flow's calls are all taken: it waits beside them, and the call that ends next hands
--     it on;
--   its flow's rate is spent: postponed to its next start, no attempt spent.
-- A flow is the flow-control key the message names, else its destination.
--#include flow
--#include message_counts
-- KEYS[1] message hash   KEYS[2] inflight zset
-- KEYS[3] the flow's calls under way (zset: ref, score = lease deadline)
-- KEYS[4] the flow's waiting claims (zset: SQS body, score = due ms)
-- KEYS[5] the flow's state (hash)   KEYS[6] the destination's breaker (hash)
-- KEYS[7] message counts hash (a claim moves one from queued to delivering)
-- ARGV[1] message ref   ARGV[2] claim token   ARGV[3] lease deadline ms   ARGV[4] now ms
-- ARGV[5] calls allowed at once to a destination (0: no limit), unless the message says
-- ARGV[6] the claim as an SQS body (kept while it waits)   ARGV[7] its due ms
-- ARGV[8] the token a postponed claim is sent on with   ARGV[9] queue grace ms
-- ARGV[10] whether the destination is known ('1'; claims from before they were counted: '')
-- Returns {'go', the message}; {'open', when the breaker may let a probe through (ms), the
-- message}; {'later', when the postponed claim is due (ms)}; {'waiting'}; or an empty list
-- (nothing to claim). The message is the values of its hash's fields status, token,
-- flowParallelism, flowRate, attempts, due, url, payload, createdAt, secret, attemptLog,
-- flowKey, lastError and nextAttemptAt, in that order (store.py's DELIVERY_FIELDS), as claimed.
local message_key = KEYS[1]
local inflight_key = KEYS[2]
local calls_key = KEYS[3]
local waiting_key = KEYS[4]
local state_key = KEYS[5]
local breaker_key = KEYS[6]
local message_counts_key = KEYS[7]
local message_ref = ARGV[1]
local claim_token = ARGV[2]
local lease_deadline_ms = ARGV[3]
local now_ms = ARGV[4]
local max_calls = ARGV[5]
local claim_body = ARGV[6]
local due_ms = ARGV[7]
local postpone_token = ARGV[8]
local grace_ms = ARGV[9]
local known_destination = ARGV[10]

-- One read checks the claim and gives what its delivery needs, answered as it is read: only the
-- fields a delivery reads, without their names, cost Redis less than the whole hash.
local message = redis.call('HMGET', message_key, 'status', 'token', 'flowParallelism', 'flowRate',
  'attempts', 'due', 'url', 'payload', 'createdAt', 'secret', 'attemptLog', 'flowKey', 'lastError',
  'nextAttemptAt')
if message[1] ~= 'queued' or message[2] ~= claim_token then return {} end
local now = tonumber(now_ms)

local function postpone(until_ms)
  redis.call('HSET', message_key, 'token', postpone_token, 'nextAttemptAt', until_ms)
  redis.call('ZADD', inflight_key, until_ms + tonumber(grace_ms), message_ref)
  return {'later', until_ms}
end

-- Returns the message as claimed.
local function claim()
  local attempts = tonumber(message[5] or '0') + 1
  redis.call('HSET', message_key, 'status', 'delivering', 'attempts', attempts)
  count_down(message_counts_key, 'queued')
  redis.call('HINCRBY', message_counts_key, 'delivering', 1)
  redis.call('ZADD', inflight_key, lease_deadline_ms, message_ref)
  message[1] = 'delivering'
  message[5] = attempts
  return message
end

local paused_until = tonumber(redis.call('HGET', state_key, 'pausedUntil') or '0')
if paused_until > now then return postpone(paused_until) end

local probing = false
if known_destination ~= '' then
  local verdict, until_ms = breaker_admits(breaker_key, message_ref, now)
  if verdict == 'open' then return {'open', until_ms, claim()} end
  probing = verdict == 'probe'
end

local limit = tonumber(message[3] or max_calls)
-- Only a flow that looks full is looked at closer: calls whose dispatcher died hold their share
-- only until their lease ends, and this call may hold one already (a redelivery).
if limit > 0 and redis.call('ZCARD', calls_key) >= limit then
  redis.call('ZREMRANGEBYSCORE', calls_key, '-inf', now_ms)
  if not redis.call('ZSCORE', calls_key, message_ref) and redis.call('ZCARD', calls_key) >= limit then
    -- While it waits its place in the inflight index moves out to when it should have had a
    -- call even if every call ahead of it took its whole lease: the tick takes it up only if
    -- the calls that were to hand it on were lost, not while a slow destination works through
    -- a long queue.
    local ahead = redis.call('ZCARD', waiting_key)
    local lease = tonumber(lease_deadline_ms) - now
    local presumed_lost = (math.floor(ahead / limit) + 2) * lease
    redis.call('ZADD', waiting_key, due_ms, claim_body)
    redis.call('ZADD', inflight_key, now + presumed_lost, message_ref)
    -- For hand_on.lua, which a claim whose message is gone leaves without its limit.
    redis.call('HSET', state_key, 'parallelism', limit)
    keep_for(state_key, presumed_lost)
    return {'waiting'}
  end
end

local rate = tonumber(message[4] or '0')
if rate > 0 then
  local next_start = rate_admits(state_key, rate, now)
  if next_start > now then return postpone(next_start) end
end

if limit > 0 then redis.call('ZADD', calls_key, lease_deadline_ms, message_ref) end
if probing then redis.call('HSET', breaker_key, 'probe', message_ref, 'probeUntil', lease_deadline_ms) end
return {'go', claim()}
