-- requeue: run a task again now, by hand (dashboard "retry now", dead-letter
-- replay). A failed task gets one more attempt (it keeps its retry count, so a
-- new failure fails it again) and leaves the dead letters; a scheduled,
-- retrying or held one is moved to the front of the timer. The state change and
-- the timer entry are made together, so the promoter sees both. A far task's hour list
-- entry stays behind, stale: its due time is no longer in that hour (common.lua: waits_in_hour).
-- KEYS: the task's keys in TaskKeys order (task_keys.lua names them)
-- ARGV: id, now, event, histmax
-- Returns {'requeued', previous_state, topic} or {'refused', state} or {'missing'}.
local id, now = ARGV[1], tonumber(ARGV[2])
local f = redis.call('HMGET', K_TASK, 'st', 'tp')
if not f[1] then return {'missing'} end
if f[1] ~= 'failed' and f[1] ~= 'scheduled' and f[1] ~= 'retrying' then return {'refused', f[1]} end
if f[1] == 'failed' then
  redis.call('ZREM', K_DONE, id)
  redis.call('ZREM', K_DEAD, id)
  redis.call('HDEL', K_TASK, 'fin')
  redis.call('HSET', K_TASK, 'lost', 0)
end
redis.call('ZREM', K_HELD, id)
local state = f[1] == 'scheduled' and 'scheduled' or 'retrying'
set_due(K_TASK, now)
redis.call('HSET', K_TASK, 'st', state)
redis.call('ZADD', K_TIMER, now, id)
move(K_STATS, f[2], f[1], state)
emit_event(K_STATS, 'requeued', id, f[2], now, 'next', now)
record(K_HISTORY, ARGV[3], ARGV[4])
return {'requeued', f[1], f[2]}
