-- Subscribe a live connection to a topic, and keep its records alive.
-- KEYS[1] connection hash   KEYS[2] connection's subscriptions set   KEYS[3] topic's subscribers set
-- ARGV[1] connection id   ARGV[2] topic   ARGV[3] expiry seconds for the connection's records
-- ARGV[4] expiry seconds for the topic set (the longest a connection can live)
-- ARGV[5] topics one connection may subscribe to (0: no cap)
-- ARGV[6] a topic not counted against that cap ('' for none: the Socket.IO heartbeat's)
-- Returns 1, 0 when the connection is unknown (expired or gone), -1 when it holds its cap.
local connection_key = KEYS[1]
local subscriptions_key = KEYS[2]
local topic_key = KEYS[3]
local connection_id = ARGV[1]
local topic = ARGV[2]
local expiry_seconds = ARGV[3]
local topic_expiry_seconds = ARGV[4]
local max_subscriptions = ARGV[5]
local uncounted_topic = ARGV[6]

if redis.call('EXISTS', connection_key) == 0 then return 0 end
local cap = tonumber(max_subscriptions)
if cap > 0 and topic ~= uncounted_topic and redis.call('SISMEMBER', subscriptions_key, topic) == 0 then
  local held = redis.call('SCARD', subscriptions_key) - redis.call('SISMEMBER', subscriptions_key, uncounted_topic)
  if held >= cap then return -1 end
end
redis.call('SADD', topic_key, connection_id)
redis.call('EXPIRE', topic_key, topic_expiry_seconds)
redis.call('SADD', subscriptions_key, topic)
redis.call('EXPIRE', connection_key, expiry_seconds)
redis.call('EXPIRE', subscriptions_key, expiry_seconds)
return 1
