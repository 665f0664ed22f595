-- promote: first move the ids of the hour lists whose hour starts within `reach` into
-- the timer (at most `move_limit` list entries a call, oldest hour first; the rest next
-- pass: an hour list is moved about `reach` before its hour starts), then move the ids
-- due within the horizon from the timer to "queued", bump their generation and give
-- each an in-flight lease, in one step, so that any number of promoters running at
-- once never hand out the same task twice. A list entry whose task no longer waits
-- there (deleted, requeued, or its id purged and reused: common.lua waits_in_hour) is
-- dropped; an hour leaves `hours` with its last entry. `hours` is not among KEYS: a
-- declared key that does not exist (a shard without far tasks) would refuse the whole
-- call while its Redis Cluster slot is being moved.
-- KEYS: timer, inflight, stats
-- ARGV: now, horizon, lease, limit, task_prefix, history_prefix, histmax, reach, hours, hour_list_prefix, move_limit
-- Returns a flat list id, gen, due, has_retry, topic, id, ...
local now, horizon, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])

-- One hour list's next `count` entries into the timer; how many were taken, or nil if a read
-- failed (try_read: in a half-moved slot the move waits for a later pass, an hour has an hour of
-- slack, and the promotion below goes on). Every read comes before the first write, so an hour
-- moves whole or not at all.
local function move_hour(hour, count)
  local list = hour_list(ARGV[10], hour)
  local ids = try_read('LRANGE', list, 0, count - 1)
  if not ids then return nil end
  local fields = {}
  for i, id in ipairs(ids) do
    fields[i] = try_read('HMGET', ARGV[5] .. id, 'st', 'gen', 'due')
    if not fields[i] then return nil end
  end
  redis.call('LTRIM', list, #ids, -1)
  for i, id in ipairs(ids) do
    local f = fields[i]
    if waits_in_hour(f[1], f[2], f[3], hour) then redis.call('ZADD', KEYS[1], tonumber(f[3]), id) end
  end
  if redis.call('LLEN', list) == 0 then redis.call('ZREM', ARGV[9], hour) end
  return #ids
end

local budget = tonumber(ARGV[11])
local near = try_read('ZRANGEBYSCORE', ARGV[9], '-inf', last_near_hour(now, tonumber(ARGV[8])), 'LIMIT', 0, budget)
for _, hour in ipairs(near or {}) do
  local moved = budget > 0 and move_hour(tonumber(hour), budget)
  if not moved then break end
  budget = budget - moved
end

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
