-- promote: move the ids due within the horizon from the timer to "queued", bump
-- their generation and give each an in-flight lease, in one step, so that any
-- number of promoters running at once never hand out the same task twice.
-- KEYS: timer, inflight, stats
-- ARGV: now, horizon, lease, limit, task_prefix, history_prefix, histmax
-- Returns a flat list id, gen, due, has_retry, topic, id, ...
local now, horizon, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now + horizon, 'LIMIT', 0, tonumber(ARGV[4]))
local fields = read_tasks(ARGV[5], ids, 'st', 'due', 'tp', 'hr')
local out = {}
for i, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[5] .. id
  local f = fields[i]
  if PENDING[f[1]] and f[1] ~= 'queued' then
    local gen = redis.call('HINCRBY', key, 'gen', 1)
    redis.call('HSET', key, 'st', 'queued')
    redis.call('ZADD', KEYS[2], tonumber(f[2]) + lease, id)
    move(KEYS[3], f[3], f[1], 'queued')
    emit_event(KEYS[3], 'promoted', id, f[3], now, 'next', f[2])
    record(ARGV[6] .. id, cjson.encode({event = 'promoted', t = now, due = tonumber(f[2])}), ARGV[7])
    out[#out + 1] = id
    out[#out + 1] = gen
    out[#out + 1] = f[2]
    out[#out + 1] = f[4] or 0
    out[#out + 1] = f[3]
  end
end
return out
