-- delete: cancel a task that has not started an attempt, or dismiss a dead letter.
-- Mark it deleted, drop it from the timer, in-flight, held and dead-letter sets,
-- and bump its generation so that an ETA message already in the broker is
-- refused by claim. Nothing fires after this.
-- KEYS: task, timer, inflight, stats, done, history, held, dead
-- ARGV: id, now, retention, event, histmax, allow_failed (1: a failed task may be dismissed)
-- Returns {'deleted', previous_state, topic}, {'refused', state, topic} or {'missing'}.
local id, now = ARGV[1], tonumber(ARGV[2])
local f = redis.call('HMGET', KEYS[1], 'st', 'tp')
if not f[1] then return {'missing'} end
if not PENDING[f[1]] and not (f[1] == 'failed' and ARGV[6] == '1') then return {'refused', f[1], f[2]} end
redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('HSET', KEYS[1], 'st', 'deleted', 'fin', now)
redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
redis.call('ZREM', KEYS[7], id)
redis.call('ZREM', KEYS[8], id)
redis.call('ZADD', KEYS[5], now + tonumber(ARGV[3]), id)
move(KEYS[4], f[2], f[1], 'deleted')
record(KEYS[6], ARGV[4], ARGV[5])
return {'deleted', f[1], f[2]}
