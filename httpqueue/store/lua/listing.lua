-- listing: the matching tasks of one stretch of one shard's sorted set (timer, in-flight, held,
-- dead or done) or of its hour lists, filtered by state and topic inside Redis so that a stretch
-- costs one script call however sparse the matches are. Read-only. TaskStore.list_tasks pipelines
-- one call per shard and merges the replies in (set, shard, position) order, which is why each hit
-- comes with its position: a page may end at any hit, and the next page's cursor is the position
-- after it. With a hour_list_prefix, KEYS[1] is the shard's hours set and the stretch walks the
-- hour lists in hour order, each in list order; a position there is hour * HOUR_STRIDE + index in
-- the list, so moving one hour to the timer or adding to another shifts no other hour's positions.
-- Stale list entries (common.lua: waits_in_hour) are skipped: their tasks are listed elsewhere.
-- KEYS: the sorted set
-- ARGV: offset, scan (most entries to look at), task_prefix, state ('' = any), topic ('' = any),
--       reverse (1/0), want (most hits to return), hour_list_prefix ('' = a plain sorted set)
-- Returns {next_offset, inspected, position, id, position, id, ...}: next_offset is where a
-- following call continues (-1 when the set is exhausted), inspected how many entries were
-- looked at, and each position the 0-based rank of its id in the set's listing order.
local offset, scan, want, hours = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[7]), ARGV[8]
local HOUR_STRIDE = 100000000

-- The stretch as ids, their positions and (hour lists only) their hours; whether it ends the set.
local function stretch()
  local ids, positions, in_hour = {}, {}, {}
  if hours == '' then
    -- as integers: Lua would write an offset of 15 digits or more as 1e+14 (Cursor.parse allows up to 2^53)
    local first, last = string.format('%d', offset), string.format('%d', offset + scan - 1)
    if ARGV[6] == '1' then
      ids = redis.call('ZREVRANGE', KEYS[1], first, last)
    else
      ids = redis.call('ZRANGE', KEYS[1], first, last)
    end
    for i = 1, #ids do positions[i] = offset + i - 1 end
    return ids, positions, in_hour, #ids < scan
  end
  local first, index = math.floor(offset / HOUR_STRIDE), offset % HOUR_STRIDE
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], first, '+inf', 'LIMIT', 0, scan)) do
    local hour = tonumber(member)
    local start = hour == first and index or 0
    for i, id in ipairs(redis.call('LRANGE', hour_list(hours, hour), start, start + scan - #ids - 1)) do
      ids[#ids + 1] = id
      positions[#ids] = hour * HOUR_STRIDE + start + i - 1
      in_hour[#ids] = hour
    end
    if #ids >= scan then return ids, positions, in_hour, false end
  end
  return ids, positions, in_hour, true
end

local ids, positions, in_hour, exhausted = stretch()
local out = {exhausted and -1 or positions[#ids] + 1, #ids}
local hits = 0
for i, id in ipairs(ids) do
  local f = redis.call('HMGET', ARGV[3] .. id, 'st', 'tp', 'gen', 'due')
  local listed = f[1] and (not in_hour[i] or waits_in_hour(f[1], f[3], f[4], in_hour[i]))
  if listed and (ARGV[4] == '' or f[1] == ARGV[4]) and (ARGV[5] == '' or f[2] == ARGV[5]) then
    out[#out + 1] = positions[i]
    out[#out + 1] = id
    hits = hits + 1
    if hits >= want then
      if i < #ids then
        out[1], out[2] = positions[i] + 1, i
      end
      return out
    end
  end
end
return out
