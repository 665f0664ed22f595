-- listing: the matching tasks of one stretch of one shard's sorted set (timer, in-flight, held,
-- dead or done), filtered by state and topic inside Redis so that a stretch costs one script call
-- however sparse the matches are. Read-only. TaskStore.list_tasks pipelines one call per shard
-- and merges the replies in (set, shard, position) order, which is why each hit comes with its
-- position: a page may end at any hit, and the next page's cursor is the position after it.
-- KEYS: the sorted set
-- ARGV: offset, scan (most entries to look at), task_prefix, state ('' = any), topic ('' = any),
--       reverse (1/0), want (most hits to return)
-- Returns {next_offset, inspected, position, id, position, id, ...}: next_offset is where a
-- following call continues (-1 when the set is exhausted), inspected how many entries were
-- looked at, and each position the 0-based rank of its id in the set's listing order.
local offset, scan, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[7])
local ids
if ARGV[6] == '1' then
  ids = redis.call('ZREVRANGE', KEYS[1], offset, offset + scan - 1)
else
  ids = redis.call('ZRANGE', KEYS[1], offset, offset + scan - 1)
end
local out = {#ids < scan and -1 or offset + #ids, #ids}
local hits = 0
for i, id in ipairs(ids) do
  local f = redis.call('HMGET', ARGV[3] .. id, 'st', 'tp')
  if f[1] and (ARGV[4] == '' or f[1] == ARGV[4]) and (ARGV[5] == '' or f[2] == ARGV[5]) then
    out[#out + 1] = offset + i - 1
    out[#out + 1] = id
    hits = hits + 1
    if hits >= want then
      if i < #ids then
        out[1], out[2] = offset + i, i
      end
      return out
    end
  end
end
return out
