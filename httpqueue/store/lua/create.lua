-- create: refuse a duplicate id, store the task hash, and either park the task in
-- the timer (due later than `direct`, so a promoter pass batches it with others) or mark it queued with an in-flight lease
-- (the caller then publishes the ETA message; should it die first, the lease
-- runs out and a promoter publishes it instead). All or nothing.
-- KEYS: the task's keys in TaskKeys order (task_keys.lua names them)
-- ARGV: id, now, due, direct, lease, topic, field, value, ...
-- Returns {1, gen} when the caller must publish, {0, 0} when parked, {-1, fingerprint} if the id
-- exists (the stored request fingerprint, '' if none: the caller decides between replay and conflict).
local id, now, due = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local direct, lease, topic = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
if redis.call('EXISTS', K_TASK) == 1 then return {-1, redis.call('HGET', K_TASK, 'fp') or ''} end
redis.call('HSET', K_TASK, unpack(ARGV, 7))
if due <= now + direct then
  redis.call('HSET', K_TASK, 'st', 'queued', 'gen', 1)
  redis.call('ZADD', K_INFLIGHT, due + lease, id)
  move(K_STATS, topic, nil, 'queued')
  return {1, 1}
end
redis.call('HSET', K_TASK, 'st', 'scheduled')
redis.call('ZADD', K_TIMER, due, id)
move(K_STATS, topic, nil, 'scheduled')
return {0, 0}
