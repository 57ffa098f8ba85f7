-- Store a new webhook message and index it, unless its id is taken by one not yet finished:
-- a delivered or failed message frees its id, and the new one replaces its record.
-- A replay (given its attempt-log line) sets a delivered or failed message on its way again, the same way:
-- its record stays (payload, target, flow control, attempt log), its retries start afresh.
-- KEYS[1] message hash        KEYS[2] pending-messages zset
-- KEYS[3] due index zset      KEYS[4] inflight zset
-- KEYS[5] the sweep marker of the message's due second (used in 'sweep' mode)
-- KEYS[6] failed-messages zset   KEYS[7] message counts hash
-- ARGV[1] message id   ARGV[2] webhook url   ARGV[3] payload json   ARGV[4] due ms
-- ARGV[5] now ms   ARGV[6] message ref (in the due index)
-- ARGV[7] how it reaches SQS:
--   'tick'  the due index only: a later tick claims it
--   'claim' claimed now, the caller sends it (due too soon for anything else)
--   'sweep' due inside the window the current tick already covered: it waits in the due
--           index, and the first message of its second asks for a sweep of that second
--           (one SQS message for all of them); once the second is swept, it is claimed now
-- ARGV[8] claim token   ARGV[9] inflight deadline ms (when claimed)
-- ARGV[10] how long a new sweep marker lives (ms)
-- ARGV[11] for a replay, its attempt-log line ('' for a new message)
-- ARGV[12] how many lines the attempt log keeps
-- Then the message's optional fields (its flow control, its own signing secret), as name/value
-- pairs after those.
-- Returns 0 when the id is held by a message not yet finished; -1 for a replay of no message;
-- else 1 (waits in the due index), 2 (claimed: send it) or 3 (first of its second: send the sweep).
--#include sweep_marker
--#include attempt_log
local message_key = KEYS[1]
local pending_messages_key = KEYS[2]
local due_key = KEYS[3]
local inflight_key = KEYS[4]
local sweep_key = KEYS[5]
local failed_messages_key = KEYS[6]
local message_counts_key = KEYS[7]
local message_id = ARGV[1]
local webhook_url = ARGV[2]
local payload_json = ARGV[3]
local due_ms = ARGV[4]
local now_ms = ARGV[5]
local message_ref = ARGV[6]
local mode = ARGV[7]
local claim_token = ARGV[8]
local inflight_deadline_ms = ARGV[9]
local marker_ttl_ms = ARGV[10]
local replay_entry = ARGV[11]
local attempt_log_size = ARGV[12]

-- Every message hash holds its status: none means no message.
local held_by = redis.call('HGET', message_key, 'status')
local finished = held_by == 'delivered' or held_by == 'failed'
if replay_entry ~= '' then
  if not held_by then return -1 end
  if not finished then return 0 end
  -- Kept until it finishes again, as a new message is; what its last round left goes.
  redis.call('PERSIST', message_key)
  redis.call('HDEL', message_key, 'finishedAt', 'lastError', 'token', 'nextAttemptAt')
  log_attempt(message_key, replay_entry, attempt_log_size)
elseif finished then
  -- Finished: only kept for inspection (it left every index), so it goes whole, fields and
  -- retention expiry alike.
  redis.call('DEL', message_key)
elseif held_by then
  return 0
end
if held_by == 'failed' then redis.call('ZREM', failed_messages_key, message_id) end
local result = 1
if mode == 'sweep' then
  local state = ask_sweep(sweep_key, marker_ttl_ms)
  if state == 'ask' then
    result = 3
  elseif state == 'swept' then
    mode = 'claim'
  end
end
if replay_entry == '' then
  -- Its optional fields last: unpack() adds them to the same HSET (none, none).
  redis.call('HSET', message_key, 'id', message_id, 'url', webhook_url, 'payload', payload_json,
    'due', due_ms, 'createdAt', now_ms, 'status', 'scheduled', 'attempts', 0, unpack(ARGV, 13))
else
  redis.call('HSET', message_key, 'due', due_ms, 'status', 'scheduled', 'attempts', 0)
end
redis.call('ZADD', pending_messages_key, due_ms, message_id)
if mode == 'claim' then
  redis.call('HSET', message_key, 'status', 'queued', 'token', claim_token, 'nextAttemptAt', due_ms)
  redis.call('ZADD', inflight_key, inflight_deadline_ms, message_ref)
  redis.call('HINCRBY', message_counts_key, 'queued', 1)
  return 2
end
redis.call('ZADD', due_key, due_ms, message_ref)
return result
