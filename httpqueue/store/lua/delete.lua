-- delete: cancel a task that has not started an attempt, or dismiss a dead letter.
-- Mark it deleted, drop it from the timer, in-flight, held and dead-letter sets,
-- and bump its generation so that an ETA message already in the broker is
-- refused by claim. Nothing fires after this. A far task's entry in its hour list stays
-- (no list is searched): promote.lua skips it when it moves that hour (common.lua: waits_in_hour).
-- KEYS: the task's keys in TaskKeys order (task_keys.lua names them)
-- ARGV: id, now, retention, event, histmax, allow_failed (1: a failed task may be dismissed)
-- Returns {'deleted', previous_state, topic}, {'refused', state, topic} or {'missing'}.
local id, now = ARGV[1], tonumber(ARGV[2])
local f = redis.call('HMGET', K_TASK, 'st', 'tp')
if not f[1] then return {'missing'} end
if not PENDING[f[1]] and not (f[1] == 'failed' and ARGV[6] == '1') then return {'refused', f[1], f[2]} end
redis.call('HINCRBY', K_TASK, 'gen', 1)
redis.call('HSET', K_TASK, 'st', 'deleted', 'fin', now)
redis.call('ZREM', K_TIMER, id)
redis.call('ZREM', K_INFLIGHT, id)
redis.call('ZREM', K_HELD, id)
redis.call('ZREM', K_DEAD, id)
redis.call('ZADD', K_DONE, now + tonumber(ARGV[3]), id)
move(K_STATS, f[2], f[1], 'deleted')
emit_event(K_STATS, 'deleted', id, f[2], now)
record(K_HISTORY, ARGV[4], ARGV[5])
return {'deleted', f[1], f[2]}
