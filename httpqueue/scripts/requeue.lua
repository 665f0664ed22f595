-- requeue: run a task again now, by hand (dashboard "retry now", dead-letter
-- replay). A failed task gets one more attempt (it keeps its retry count, so a
-- new failure fails it again) and leaves the dead letters; a scheduled,
-- retrying or held one is moved to the front of the timer. The state change and
-- the timer entry are made together, so the promoter sees both.
-- KEYS: task, timer, done, stats, history, held, dead
-- ARGV: id, now, event, histmax
-- Returns {'requeued', previous_state} or {'refused', state} or {'missing'}.
local id, now = ARGV[1], tonumber(ARGV[2])
local f = redis.call('HMGET', KEYS[1], 'st', 'tp')
if not f[1] then return {'missing'} end
if f[1] ~= 'failed' and f[1] ~= 'scheduled' and f[1] ~= 'retrying' then return {'refused', f[1]} end
if f[1] == 'failed' then
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZREM', KEYS[7], id)
  redis.call('HDEL', KEYS[1], 'fin')
  redis.call('HSET', KEYS[1], 'lost', 0)
end
redis.call('ZREM', KEYS[6], id)
local state = f[1] == 'scheduled' and 'scheduled' or 'retrying'
set_due(KEYS[1], now)
redis.call('HSET', KEYS[1], 'st', state)
redis.call('ZADD', KEYS[2], now, id)
move(KEYS[4], f[2], f[1], state)
record(KEYS[5], ARGV[3], ARGV[4])
return {'requeued', f[1]}
