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
-- KEYS: the task's keys in TaskKeys order (task_keys.lua names them)
-- ARGV: id, gen, now, outcome, due, retention, code, error, event, histmax, dead_retention, slot
-- Returns 1 when recorded, 0 when the attempt no longer owned the task.
local id, now, outcome = ARGV[1], tonumber(ARGV[3]), ARGV[4]
local f = redis.call('HMGET', K_TASK, 'st', 'gen', 'tp', 'hr', 'due')
if f[1] ~= 'delivering' or tostring(f[2]) ~= ARGV[2] then return 0 end
redis.call('ZREM', K_INFLIGHT, id)
redis.call('HDEL', K_TASK, 'sl')
local state
if outcome == 'deferred' or outcome == 'held' then
  state = (tonumber(f[4] or 0) > 0) and 'retrying' or 'scheduled'
  redis.call('HINCRBY', K_TASK, 'at', -1)
  redis.call('HSET', K_TASK, 'st', state)
  if outcome == 'held' then
    redis.call('ZADD', K_HELD, tonumber(f[5]), id)
  else
    set_due(K_TASK, ARGV[5])
    redis.call('ZADD', K_TIMER, tonumber(ARGV[5]), id)
    if ARGV[12] ~= '' then redis.call('HSET', K_TASK, 'sl', ARGV[12]) end
  end
else
  if ARGV[7] ~= '' then redis.call('HSET', K_TASK, 'lc', ARGV[7]) else redis.call('HDEL', K_TASK, 'lc') end
  if ARGV[8] ~= '' then redis.call('HSET', K_TASK, 'le', ARGV[8]) else redis.call('HDEL', K_TASK, 'le') end
  state = outcome
  if outcome == 'succeeded' then
    redis.call('HSET', K_TASK, 'st', outcome, 'fin', now)
    redis.call('ZADD', K_DONE, now + tonumber(ARGV[6]), id)
  elseif outcome == 'failed' then
    redis.call('HSET', K_TASK, 'st', outcome, 'fin', now)
    redis.call('ZADD', K_DEAD, now + tonumber(ARGV[11]), id)
  else
    state = 'retrying'
    redis.call('HINCRBY', K_TASK, outcome == 'throttled' and 'th' or 'hr', 1)
    set_due(K_TASK, ARGV[5])
    redis.call('HSET', K_TASK, 'st', 'retrying')
    redis.call('ZADD', K_TIMER, tonumber(ARGV[5]), id)
  end
end
move(K_STATS, f[3], 'delivering', state)
record(K_HISTORY, ARGV[9], ARGV[10])
if exporting(K_STATS) then
  -- the attempt's numbers are in its history event (duration, lateness, attempt number)
  local ok, e = pcall(cjson.decode, ARGV[9] ~= '' and ARGV[9] or '{}')
  if not ok then e = {} end
  local next_at = (outcome ~= 'succeeded' and outcome ~= 'failed' and ARGV[5] ~= '0') and ARGV[5] or ''
  emit_event(K_STATS, outcome, id, f[3], now, 'n', text(e.n), 'code', ARGV[7], 'ms', text(e.ms),
             'late', text(e.late_ms), 'err', ARGV[8] ~= '' and ARGV[8] or text(e.reason), 'next', next_at,
             'h', url_host(redis.call('HGET', K_TASK, 'cb')))
end
return 1
