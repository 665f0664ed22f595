-- Prepended to every script by store.py, so these helpers exist in one place.

-- The field of the per-shard stats hash that counts the tasks of `topic` in `state`.
local function count_field(state, topic)
  return state .. '|' .. topic
end

-- Keep the per-shard "state|topic" counts true when a task changes state.
local function move(stats, topic, from, to)
  if from then redis.call('HINCRBY', stats, count_field(from, topic), -1) end
  if to then redis.call('HINCRBY', stats, count_field(to, topic), 1) end
end

-- Append one lifecycle event (a JSON string) to a task's capped history list.
-- With pcall: in a Redis Cluster slot being resharded, a history list not yet
-- created (or already moved) is "a non local key" to the scripts that reach it
-- through a prefix; the event is then dropped rather than the script stopped
-- half-way through its writes.
local function record(hkey, event, histmax)
  if event and event ~= '' then
    redis.pcall('RPUSH', hkey, event)
    redis.pcall('LTRIM', hkey, -tonumber(histmax), -1)
  end
end

-- The fields of each task of `ids` (HMGET), read before a script writes anything. Scripts
-- that reach task keys through a prefix (not declared in KEYS) call this first: in a Redis
-- Cluster slot half moved to another node, a task key already moved makes the read fail,
-- and the script then stops before any write, rather than after some (it is run again).
local function read_tasks(prefix, ids, ...)
  local fields = {}
  for i, id in ipairs(ids) do fields[i] = redis.call('HMGET', prefix .. id, ...) end
  return fields
end

local PENDING = {scheduled = true, queued = true, retrying = true}

-- Move a task's due time, first keeping its original one as 'ex' (a new task stores only 'due',
-- which saves memory on millions of parked tasks).
local function set_due(key, due)
  if redis.call('HEXISTS', key, 'ex') == 0 then redis.call('HSET', key, 'ex', redis.call('HGET', key, 'due')) end
  redis.call('HSET', key, 'due', due)
end

-- Export (httpqueue export): append one lifecycle event to the shard's event stream, in the
-- same script run as the state change it describes, so a process that dies can neither lose
-- an event nor leave one for a change that did not happen. Written only while the shard's
-- switch key holds a bound above 0 (the stream's MAXLEN ~; beyond it the oldest entries are
-- trimmed, read or not, and exporters count what they missed). Both keys are the stats
-- key's neighbours ('<tag>:stats' -> '<tag>:evmax', '<tag>:ev'; store/keys.py), so they
-- share its slot. Through pcall, like record(): in a Redis Cluster slot being resharded the
-- event is dropped rather than the script stopped half-way through its writes.
local export_bound, export_stream = nil, nil
local function exporting(stats)
  if export_bound == nil then
    local base = string.sub(stats, 1, -6)
    local bound = redis.pcall('GET', base .. 'evmax')
    export_bound = (type(bound) == 'string' and tonumber(bound)) or 0
    export_stream = base .. 'ev'
  end
  return export_bound > 0
end

-- emit_event(stats, kind, id, topic, now, field, value, ...): see exporting() above.
local function emit_event(stats, kind, id, topic, now, ...)
  if exporting(stats) then
    redis.pcall('XADD', export_stream, 'MAXLEN', '~', export_bound, '*', 'k', kind, 'id', id, 'tp', topic or '',
                't', now, ...)
  end
end

-- A decoded JSON value as a stream field: '' for nothing or null, numbers as Lua prints them.
local function text(value)
  if value == nil or value == cjson.null then return '' end
  return tostring(value)
end

-- The host of a callback URL (the failure-rate-per-host query groups by it).
local function url_host(url)
  return url and string.match(url, '^%a[%w+.-]*://([^/?#]+)') or ''
end

-- Hour lists (store/keys.py: Keys.hours, Keys.hour_list). A task created due in an hour that starts
-- beyond `reach` waits in its shard's list of that due hour instead of the timer (an entry of a
-- list is far smaller than one of a sorted set); a promoter pass moves the hour's ids into the
-- timer once the hour starts within `reach`. HOUR_MS is keys.TIMER_HOUR_MS.
local HOUR_MS = 3600000

local function hour_of(ms)
  return math.floor(ms / HOUR_MS)
end

-- The last hour whose ids belong in the timer at `now`: hours after it are far.
local function last_near_hour(now, reach)
  return hour_of(now + reach)
end

-- The list of one due hour, from the shard's hour list prefix (Keys.hour_list_prefix).
local function hour_list(prefix, hour)
  return prefix .. string.format('%d', hour)
end

-- Whether a task read as st, gen, due still waits in the list of `hour`: created there (only
-- create.lua parks in hour lists, as 'scheduled' without a generation) and neither handed out,
-- deleted nor moved to another time since. Any other entry is stale and skipped.
local function waits_in_hour(st, gen, due, hour)
  return st == 'scheduled' and not gen and due and hour_of(tonumber(due)) == hour or false
end

-- A read through pcall: its reply, or nil when it failed. In a Redis Cluster slot half moved, a key
-- reached by name (an hours set, an hour list, a task hash) that is no longer on this node fails the
-- read; a script that can do without it this time (promote's move of the hour lists, the overdue
-- check) then skips it instead of stopping.
local function try_read(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then return nil end
  return reply
end
