-- Prepended to every script by store.py, so these helpers exist in one place.

-- Keep the per-shard "state|topic" counts true when a task changes state.
local function move(stats, topic, from, to)
  if from then redis.call('HINCRBY', stats, from .. '|' .. topic, -1) end
  if to then redis.call('HINCRBY', stats, to .. '|' .. topic, 1) end
end

-- Append one lifecycle event (a JSON string) to a task's capped history list.
local function record(hkey, event, histmax)
  if event and event ~= '' then
    redis.call('RPUSH', hkey, event)
    redis.call('LTRIM', hkey, -tonumber(histmax), -1)
  end
end

local PENDING = {scheduled = true, queued = true, retrying = true}

-- Move a task's due time, first keeping its original one as 'ex' (a new task stores only 'due',
-- which saves memory on millions of parked tasks).
local function set_due(key, due)
  if redis.call('HEXISTS', key, 'ex') == 0 then redis.call('HSET', key, 'ex', redis.call('HGET', key, 'due')) end
  redis.call('HSET', key, 'due', due)
end
