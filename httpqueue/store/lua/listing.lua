-- listing: one page of a shard's tasks from one of its sorted sets (timer,
-- in-flight or done), filtered by state and topic inside Redis so that a page
-- costs one round trip however sparse the matches are. Read-only.
-- KEYS: the sorted set
-- ARGV: offset, scan (most entries to look at), task_prefix, state ('' = any), topic ('' = any),
--       reverse (1/0), want (most ids to return)
-- Returns {next_offset, id, id, ...}; next_offset is -1 when the set is exhausted.
local offset, scan, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[7])
local ids
if ARGV[6] == '1' then
  ids = redis.call('ZREVRANGE', KEYS[1], offset, offset + scan - 1)
else
  ids = redis.call('ZRANGE', KEYS[1], offset, offset + scan - 1)
end
local out = {#ids < scan and -1 or offset + #ids}
for i, id in ipairs(ids) do
  local f = redis.call('HMGET', ARGV[3] .. id, 'st', 'tp')
  if f[1] and (ARGV[4] == '' or f[1] == ARGV[4]) and (ARGV[5] == '' or f[2] == ARGV[5]) then
    out[#out + 1] = id
    if #out - 1 >= want then
      out[1] = (i == #ids and out[1]) or offset + i
      return out
    end
  end
end
return out
