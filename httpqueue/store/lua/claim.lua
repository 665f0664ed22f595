-- claim: the delivery task's first step. Check that this message is the task's
-- current one (same generation) and that the task is still queued, then mark it
-- delivering with an attempt lease, all at once: a deleted, finished or
-- re-issued task makes the message stale and it is dropped without a callback.
-- With an owner (the claiming worker's incarnation) the attempt is also recorded in
-- that owner's owned set of this shard, so it is released at once when the owner's
-- heartbeat stops (orphans.lua) instead of when its lease runs out.
-- KEYS: the task's keys in TaskKeys order (task_keys.lua names them), then per owner (none or one): owned
-- ARGV: id, gen, now, lease, extra (a task with its own timeout 'to' gets to + extra instead of lease),
--   then per owner (none or one): owner
-- Returns {'ok', field, value, ...} or {'stale', state} or {'missing'}.
local K_OWNED = KEYS[9]
local f = redis.call('HMGET', K_TASK, 'st', 'gen', 'tp', 'to')
if not f[1] then return {'missing'} end
if f[1] ~= 'queued' or tostring(f[2]) ~= ARGV[2] then return {'stale', f[1]} end
redis.call('HSET', K_TASK, 'st', 'delivering')
redis.call('HDEL', K_TASK, 'rq')  -- the message came through: reclaim's backoff starts over
local attempt = redis.call('HINCRBY', K_TASK, 'at', 1)
local lease = f[4] and (tonumber(f[4]) + tonumber(ARGV[5])) or tonumber(ARGV[4])
redis.call('ZADD', K_INFLIGHT, tonumber(ARGV[3]) + lease, ARGV[1])
if ARGV[6] and ARGV[6] ~= '' then
  redis.call('HSET', K_TASK, 'ow', ARGV[6])
  redis.call('ZREMRANGEBYSCORE', K_OWNED, '-inf', ARGV[3])  -- claims whose lease passed: settled or reclaimed
  redis.call('ZADD', K_OWNED, tonumber(ARGV[3]) + lease, ARGV[1])
  if redis.call('PTTL', K_OWNED) < lease + 60000 then redis.call('PEXPIRE', K_OWNED, lease + 60000) end
end
move(K_STATS, f[3], 'queued', 'delivering')
emit_event(K_STATS, 'claimed', ARGV[1], f[3], ARGV[3], 'n', attempt)
local all = redis.call('HGETALL', K_TASK)
table.insert(all, 1, 'ok')
return all
