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
local now, direct, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local near = last_near_hour(now, tonumber(ARGV[4]))
-- Read each hour list the batch may write before any write: in a Redis Cluster slot half moved, a
-- list not on this node stops the script here rather than half-way (see read_tasks in common.lua).
-- The first task's list needs no read: its RPUSH comes before its other writes, so it is the
-- call's first write (a single create, the common call, reads nothing extra).
local probed = {}
if ARGV[7] then probed[hour_of(tonumber(ARGV[7]))] = true end
for i = 15, #ARGV, 9 do
  local hour = hour_of(tonumber(ARGV[i + 1]))
  if hour > near and not probed[hour] then
    probed[hour] = true
    redis.call('EXISTS', hour_list(ARGV[5], hour))
  end
end
local out = {}
local n = 4
for i = 6, #ARGV, 9 do
  n = n + 1
  local key, id, due, topic = KEYS[n], ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  if redis.call('EXISTS', key) == 1 then
    out[#out + 1] = -1
    out[#out + 1] = redis.call('HGET', key, 'fp') or ''
  else
    local queued = due <= now + direct
    local state = queued and 'queued' or 'scheduled'
    local f = {'tp', topic, 'cb', ARGV[i + 3], 'ct', ARGV[i + 4], 'due', ARGV[i + 1], 'cr', ARGV[1], 'st', state}
    -- 'ex' (first due time) is written only when 'due' first moves, and 'mr' only when not 0:
    -- at a million parked tasks every field counts
    if ARGV[i + 5] ~= '0' then f[#f + 1] = 'mr'; f[#f + 1] = ARGV[i + 5] end
    if ARGV[i + 6] ~= '' then f[#f + 1] = 'opt'; f[#f + 1] = ARGV[i + 6] end
    if ARGV[i + 7] ~= '' then f[#f + 1] = 'to'; f[#f + 1] = ARGV[i + 7] end
    if ARGV[i + 8] ~= '' then f[#f + 1] = 'fp'; f[#f + 1] = ARGV[i + 8] end
    if queued then f[#f + 1] = 'gen'; f[#f + 1] = 1 end
    local hour = hour_of(due)
    local far = not queued and hour > near
    -- a far task's list first (see the reads above); the hours set names an hour from its list's
    -- first entry until promote.lua empties the list and removes the hour, both in one script run
    if far and redis.call('RPUSH', hour_list(ARGV[5], hour), id) == 1 then
      redis.call('ZADD', KEYS[4], hour, string.format('%d', hour))
    end
    redis.call('HSET', key, unpack(f))
    if queued then
      redis.call('ZADD', KEYS[2], due + lease, id)
    elseif not far then
      redis.call('ZADD', KEYS[1], due, id)
    end
    move(KEYS[3], topic, nil, state)
    if exporting(KEYS[3]) then  -- the host only when it is written
      emit_event(KEYS[3], 'created', id, topic, now, 'next', due, 'h', url_host(ARGV[i + 3]))
    end
    local code = queued and 1 or 0  -- 1, gen 1: the caller publishes; 0, 0: parked
    out[#out + 1] = code
    out[#out + 1] = code
  end
end
return out
