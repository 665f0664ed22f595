-- claim: the delivery task's first step. Check that this message is the task's
-- current one (same generation) and that the task is still queued, then mark it
-- delivering with an attempt lease, all at once: a deleted, finished or
-- re-issued task makes the message stale and it is dropped without a callback.
-- KEYS: task, inflight, stats
-- ARGV: id, gen, now, lease
-- Returns {'ok', field, value, ...} or {'stale', state} or {'missing'}.
local f = redis.call('HMGET', KEYS[1], 'st', 'gen', 'tp')
if not f[1] then return {'missing'} end
if f[1] ~= 'queued' or tostring(f[2]) ~= ARGV[2] then return {'stale', f[1]} end
redis.call('HSET', KEYS[1], 'st', 'delivering')
redis.call('HINCRBY', KEYS[1], 'at', 1)
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[1])
move(KEYS[3], f[3], 'queued', 'delivering')
local all = redis.call('HGETALL', KEYS[1])
table.insert(all, 1, 'ok')
return all
