-- reclaim: re-issue tasks whose in-flight lease ran out (the worker that held the
-- ETA message or ran the attempt died, or the publish after create never happened).
-- The generation is bumped in the same step, so the old message, should it ever
-- run, is refused by claim: the task fires once.
-- A queued task (its message not taken yet) is never failed for it: its message
-- may only wait behind a backlog or a consumer that is reconnecting, so it is
-- re-issued with a lease that doubles each time (up to 32 x lease), which bounds
-- the stale copies. A task whose attempt was lost (its worker died while
-- delivering) more than max_lost times fails for good instead of looping.
-- KEYS: inflight, stats, dead (tasks lost too often become dead letters)
-- ARGV: now, lease, limit, task_prefix, history_prefix, histmax, max_lost, retention
-- Returns a flat list id, gen, due, has_retry, topic of the tasks to publish again.
local now, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local fields = read_tasks(ARGV[4], ids, 'st', 'tp', 'due', 'hr')
local out = {}
for i, id in ipairs(ids) do
  local key = ARGV[4] .. id
  local f = fields[i]
  local st = f[1]
  if st == 'queued' or st == 'delivering' then
    local lost = 0
    if st == 'delivering' then lost = redis.call('HINCRBY', key, 'lost', 1) end
    local event = {event = 'lease_expired', t = now, state = st}
    if lost > tonumber(ARGV[7]) then
      redis.call('HSET', key, 'st', 'failed', 'fin', now, 'le', 'lease expired ' .. lost .. ' times: workers lost the task')
      redis.call('ZREM', KEYS[1], id)
      redis.call('ZADD', KEYS[3], now + tonumber(ARGV[8]), id)
      move(KEYS[2], f[2], st, 'failed')
      event.outcome = 'failed'
      emit_event(KEYS[2], 'failed', id, f[2], now, 'err', 'lease expired ' .. lost .. ' times: workers lost the task')
    else
      local gen = redis.call('HINCRBY', key, 'gen', 1)
      local wait = lease
      redis.call('HSET', key, 'st', 'queued')
      if st == 'delivering' then
        redis.call('HSET', key, 'le', 'attempt lost: its worker stopped before recording a result')
      else
        wait = lease * 2 ^ math.min(redis.call('HINCRBY', key, 'rq', 1), 5)
      end
      redis.call('ZADD', KEYS[1], now + wait, id)
      move(KEYS[2], f[2], st, 'queued')
      emit_event(KEYS[2], 'lease_expired', id, f[2], now, 'next', now + wait)
      out[#out + 1] = id
      out[#out + 1] = gen
      out[#out + 1] = math.max(now, tonumber(f[3]))
      out[#out + 1] = f[4] or 0
      out[#out + 1] = f[2]
    end
    record(ARGV[5] .. id, cjson.encode(event), ARGV[6])
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
