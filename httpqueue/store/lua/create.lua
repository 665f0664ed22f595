-- create: store new tasks of one shard. For each task: refuse a duplicate id, store
-- the task hash, and either park the task (due later than `direct`, so a promoter
-- pass batches it with others) or mark it queued with an in-flight lease (the
-- caller then publishes its ETA message; should it die first, the lease runs out
-- and a promoter publishes it instead). A parked task goes to the timer, or, when
-- its due hour starts beyond `reach`, to the list of that hour (common.lua: hour
-- lists; promote.lua moves it to the timer in time). Each task all or nothing; one
-- call per shard for a whole batch, so a batch costs one script run per shard, not per task.
-- KEYS: timer, inflight, stats, hours, then per task: task
-- ARGV: now, direct, lease, reach, hour_list_prefix, then per task: id, due, topic, callback, content, max_retry,
--   options, timeout, fingerprint
--   (max_retry '0', options, timeout and fingerprint '' when the task has none: such fields are not stored)
-- Returns per task two values: 1, gen when the caller must publish; 0, 0 when parked; -1, fingerprint
-- if the id exists (the stored request fingerprint, '' if none: the caller decides replay or conflict).
--
-- Two passes: every read first (which ids exist, and the hour lists the writes will reach), then the
-- writes, those that many tasks share grouped into one command each (one RPUSH per hour list, one ZADD
-- for the timer and one for the in-flight set, one HINCRBY per state and topic): a batch's tasks cost
-- their own hash and little else. Reads before writes also keep a Redis Cluster slot half moved from
-- stopping the script half-way: a key not on this node fails a read, before anything was written
-- (see read_tasks in common.lua).
local now, direct, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local near = last_near_hour(now, tonumber(ARGV[4]))
local NEAR = 2         -- a parked task for the timer, in `out` between the passes (its reply is 0 like a far one's)
local out = {}
local first = #ARGV > 14 and {} or nil  -- task key -> ARGV index of its group (an id sent twice in a batch)
local first_hour, first_ids = nil, nil  -- the first far hour and its ids: its list is the call's first
                                        -- write, it needs no read
local far = nil        -- any other far hour -> the ids to append to its list, in order
local n = 4
for i = 6, #ARGV, 9 do
  n = n + 1
  local key = KEYS[n]
  local exists = redis.call('EXISTS', key) == 1
  if exists or (first and first[key]) then
    out[#out + 1] = -1
    -- an id sent twice in this call: the later one finds the first one's (yet unwritten) fingerprint
    out[#out + 1] = exists and (redis.call('HGET', key, 'fp') or '') or ARGV[first[key] + 8]
  else
    if first then first[key] = i end
    local due = tonumber(ARGV[i + 1])
    local hour = hour_of(due)
    local code = 1  -- 1, gen 1: the caller publishes; 0, 0: parked
    if due > now + direct then
      code = NEAR
      if hour > near then
        code = 0
        if not first_hour then
          first_hour, first_ids = hour, {}
        end
        local ids = first_ids
        if hour ~= first_hour then
          far = far or {}
          ids = far[hour]
          if not ids then  -- any list but the first is read here, before the writes
            redis.call('EXISTS', hour_list(ARGV[5], hour))
            ids = {}
            far[hour] = ids
          end
        end
        ids[#ids + 1] = ARGV[i]
      end
    end
    out[#out + 1] = code
    out[#out + 1] = code
  end
end

-- Grouped writes go out in chunks: Lua's unpack() has a stack limit of a few thousand values.
local CHUNK = 1000
local function append(command, key, values)
  local reply
  for s = 1, #values, CHUNK do
    reply = redis.call(command, key, unpack(values, s, math.min(s + CHUNK - 1, #values)))
  end
  return reply
end

-- A far task's list before its hash, the first hour's list first; the hours set names an hour from its
-- list's first entry until promote.lua empties the list and removes the hour, both in one script run.
if first_hour then
  local function push(hour, ids)
    if append('RPUSH', hour_list(ARGV[5], hour), ids) == #ids then
      redis.call('ZADD', KEYS[4], hour, string.format('%d', hour))
    end
  end
  push(first_hour, first_ids)
  if far then
    for hour, ids in pairs(far) do push(hour, ids) end
  end
end

-- Then each new task's hash; the timer's and the in-flight set's entries, and the counts per state and
-- topic (one HINCRBY per run of tasks with the same ones), after the loop.
local timer, inflight = nil, nil
local counted, count = nil, 0
local export = exporting(KEYS[3])
n = 4
for i = 6, #ARGV, 9 do
  n = n + 1
  local code = out[2 * (n - 4) - 1]
  if code ~= -1 then
    local id, due, topic = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local state = code == 1 and 'queued' or 'scheduled'
    local f = {'tp', topic, 'cb', ARGV[i + 3], 'ct', ARGV[i + 4], 'due', due, 'cr', ARGV[1], 'st', state}
    -- 'ex' (first due time) is written only when 'due' first moves, and 'mr' only when not 0:
    -- at a million parked tasks every field counts
    if ARGV[i + 5] ~= '0' then f[#f + 1] = 'mr'; f[#f + 1] = ARGV[i + 5] end
    if ARGV[i + 6] ~= '' then f[#f + 1] = 'opt'; f[#f + 1] = ARGV[i + 6] end
    if ARGV[i + 7] ~= '' then f[#f + 1] = 'to'; f[#f + 1] = ARGV[i + 7] end
    if ARGV[i + 8] ~= '' then f[#f + 1] = 'fp'; f[#f + 1] = ARGV[i + 8] end
    if code == 1 then f[#f + 1] = 'gen'; f[#f + 1] = 1 end
    redis.call('HSET', KEYS[n], unpack(f))
    if code == 1 then
      inflight = inflight or {}
      inflight[#inflight + 1] = due + lease
      inflight[#inflight + 1] = id
    elseif code == NEAR then
      timer = timer or {}
      timer[#timer + 1] = due
      timer[#timer + 1] = id
      out[2 * (n - 4) - 1], out[2 * (n - 4)] = 0, 0
    end
    local field = count_field(state, topic)
    if field ~= counted then
      if counted then redis.call('HINCRBY', KEYS[3], counted, count) end
      counted, count = field, 0
    end
    count = count + 1
    if export then  -- the host only when it is written
      emit_event(KEYS[3], 'created', id, topic, now, 'next', due, 'h', url_host(ARGV[i + 3]))
    end
  end
end
if counted then redis.call('HINCRBY', KEYS[3], counted, count) end
if inflight then append('ZADD', KEYS[2], inflight) end
if timer then append('ZADD', KEYS[1], timer) end
return out
