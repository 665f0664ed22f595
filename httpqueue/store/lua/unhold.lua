-- unhold: part of resuming a topic: move a chunk of one shard's held tasks of
-- that topic back into the timer at their own due time (so they fire at once,
-- late, in their original order). Other topics' held tasks stay.
-- KEYS: held, timer
-- ARGV: topic, task_prefix, offset, limit
-- Returns {next_offset (-1 when done), moved}.
local offset, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local entries = redis.call('ZRANGE', KEYS[1], offset, offset + limit - 1, 'WITHSCORES')
local ids = {}
for i = 1, #entries, 2 do ids[#ids + 1] = entries[i] end
local fields = read_tasks(ARGV[2], ids, 'tp')
local moved, removed = 0, 0
for i = 1, #entries, 2 do
  local id = entries[i]
  local tp = fields[(i + 1) / 2][1]
  if tp == ARGV[1] or not tp then
    redis.call('ZREM', KEYS[1], id)
    removed = removed + 1
    if tp then
      redis.call('ZADD', KEYS[2], tonumber(entries[i + 1]), id)
      moved = moved + 1
    end
  end
end
local seen = #entries / 2
if seen < limit then return {-1, moved} end
return {offset + seen - removed, moved}
