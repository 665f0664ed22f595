-- settle: record the outcome of an attempt, but only if that attempt still owns
-- the task (same generation, still delivering; a reclaimed attempt changes
-- nothing). Outcomes:
--   succeeded: final, kept in "done" until the retention runs out;
--   failed:    final, kept in the shard's dead letters until their retention runs out;
--   retrying:  a failed attempt, parked in the timer until due;
--   throttled: code 101, parked in the timer, not counted as a failure;
--   deferred:  not attempted (topic rate/concurrency limit, open circuit): back to
--              the timer at `due`, the attempt is not counted; `slot` remembers a
--              reserved rate-limit slot;
--   held:      not attempted because the topic is paused: parked in "held" at its
--              own due time until the topic is resumed.
-- KEYS: task, timer, inflight, stats, done, history, held, dead
-- ARGV: id, gen, now, outcome, due, retention, code, error, event, histmax, dead_retention, slot
-- Returns 1 when recorded, 0 when the attempt no longer owned the task.
local id, now, outcome = ARGV[1], tonumber(ARGV[3]), ARGV[4]
local f = redis.call('HMGET', KEYS[1], 'st', 'gen', 'tp', 'hr', 'due')
if f[1] ~= 'delivering' or tostring(f[2]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[3], id)
redis.call('HDEL', KEYS[1], 'sl')
local state
if outcome == 'deferred' or outcome == 'held' then
  state = (tonumber(f[4] or 0) > 0) and 'retrying' or 'scheduled'
  redis.call('HINCRBY', KEYS[1], 'at', -1)
  redis.call('HSET', KEYS[1], 'st', state)
  if outcome == 'held' then
    redis.call('ZADD', KEYS[7], tonumber(f[5]), id)
  else
    set_due(KEYS[1], ARGV[5])
    redis.call('ZADD', KEYS[2], tonumber(ARGV[5]), id)
    if ARGV[12] ~= '' then redis.call('HSET', KEYS[1], 'sl', ARGV[12]) end
  end
else
  if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'lc', ARGV[7]) else redis.call('HDEL', KEYS[1], 'lc') end
  if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'le', ARGV[8]) else redis.call('HDEL', KEYS[1], 'le') end
  state = outcome
  if outcome == 'succeeded' then
    redis.call('HSET', KEYS[1], 'st', outcome, 'fin', now)
    redis.call('ZADD', KEYS[5], now + tonumber(ARGV[6]), id)
  elseif outcome == 'failed' then
    redis.call('HSET', KEYS[1], 'st', outcome, 'fin', now)
    redis.call('ZADD', KEYS[8], now + tonumber(ARGV[11]), id)
  else
    state = 'retrying'
    redis.call('HINCRBY', KEYS[1], outcome == 'throttled' and 'th' or 'hr', 1)
    set_due(KEYS[1], ARGV[5])
    redis.call('HSET', KEYS[1], 'st', 'retrying')
    redis.call('ZADD', KEYS[2], tonumber(ARGV[5]), id)
  end
end
move(KEYS[4], f[3], 'delivering', state)
record(KEYS[6], ARGV[9], ARGV[10])
return 1
