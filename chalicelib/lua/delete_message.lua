-- Cancel a message (or forget a finished one) and remove it from every index.
-- KEYS[1] message hash   KEYS[2] pending-messages zset
-- KEYS[3] due index zset   KEYS[4] inflight zset
-- KEYS[5] failed-messages zset   KEYS[6] message counts hash
-- ARGV[1] message id   ARGV[2] message ref
-- Returns 1 when deleted, 0 when unknown, -1 while a delivery is under way, 2 when the hash is
-- the marker of a message kept in its flow's shard (store.py, ELSEWHERE): nothing is deleted.
--#include message_counts
local message_key = KEYS[1]
local pending_messages_key = KEYS[2]
local due_key = KEYS[3]
local inflight_key = KEYS[4]
local failed_messages_key = KEYS[5]
local message_counts_key = KEYS[6]
local message_id = ARGV[1]
local message_ref = ARGV[2]

local status = redis.call('HGET', message_key, 'status')
if not status then return 0 end
if status == 'elsewhere' then return 2 end
if status == 'delivering' then return -1 end
if status == 'queued' then count_down(message_counts_key, 'queued') end
redis.call('DEL', message_key)
redis.call('ZREM', failed_messages_key, message_id)
redis.call('ZREM', pending_messages_key, message_id)
redis.call('ZREM', due_key, message_ref)
redis.call('ZREM', inflight_key, message_ref)
return 1
