-- settle: record the outcome of an attempt, but only if that attempt still owns
-- the task (same generation, still delivering; a reclaimed attempt changes
-- nothing). Outcomes: succeeded or failed (final: kept until the retention
-- runs out), retrying (a failed attempt, parked in the timer until due) or
-- throttled (code 101: parked, not counted as a failure).
-- KEYS: task, timer, inflight, stats, done, history
-- ARGV: id, gen, now, outcome, due, retention, code, error, event, histmax
-- Returns 1 when recorded, 0 when the attempt no longer owned the task.
local id, now, outcome = ARGV[1], tonumber(ARGV[3]), ARGV[4]
local f = redis.call('HMGET', KEYS[1], 'st', 'gen', 'tp')
if f[1] ~= 'delivering' or tostring(f[2]) ~= ARGV[2] then return 0 end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'lc', ARGV[7]) else redis.call('HDEL', KEYS[1], 'lc') end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'le', ARGV[8]) else redis.call('HDEL', KEYS[1], 'le') end
redis.call('ZREM', KEYS[3], id)
local state = outcome
if outcome == 'succeeded' or outcome == 'failed' then
  redis.call('HSET', KEYS[1], 'st', outcome, 'fin', now)
  redis.call('ZADD', KEYS[5], now + tonumber(ARGV[6]), id)
else
  state = 'retrying'
  redis.call('HINCRBY', KEYS[1], outcome == 'throttled' and 'th' or 'hr', 1)
  redis.call('HSET', KEYS[1], 'st', 'retrying', 'due', ARGV[5])
  redis.call('ZADD', KEYS[2], tonumber(ARGV[5]), id)
end
move(KEYS[4], f[3], 'delivering', state)
record(KEYS[6], ARGV[9], ARGV[10])
return 1
