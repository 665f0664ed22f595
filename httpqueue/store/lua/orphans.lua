-- orphans: hand out again what a worker incarnation held in one shard, when it died (its
-- heartbeat stopped) or stopped cleanly, so the next reclaim re-issues it now instead of
-- when its lease runs out:
--  * the attempts it started (its owned set, claim.lua): released only if still delivering
--    under that owner (a settled task, or one re-issued and claimed by another worker
--    since, is left alone), and only when `attempts` is '1' (a worker that stops cleanly
--    has finished its own);
--  * the tasks whose delivery message it held, not yet due (its holding set, hold.lua):
--    released only if still queued under the generation of that message.
-- A released task's in-flight score becomes `now`, and reclaim then bumps its generation,
-- so a late result or message of the incarnation is refused as stale. Both sets are
-- deleted: the incarnation is gone.
-- KEYS: owned set (of shard and incarnation), holding set (the same), inflight (of the same shard)
-- ARGV: now, incarnation, task_prefix, attempts ('1' or '0')
-- Returns the number of tasks released.
local released = 0
local function release(id)
  if redis.call('ZSCORE', KEYS[3], id) then
    redis.call('ZADD', KEYS[3], ARGV[1], id)
    released = released + 1
  end
end
if ARGV[4] ~= '0' then
  local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
  local fields = read_tasks(ARGV[3], ids, 'st', 'ow')
  for i, id in ipairs(ids) do
    if fields[i][1] == 'delivering' and fields[i][2] == ARGV[2] then release(id) end
  end
end
local ids, gens = {}, {}
for i, entry in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  ids[i], gens[i] = string.match(entry, '^(.*)|(%d+)$')
end
local fields = read_tasks(ARGV[3], ids, 'st', 'gen')
for i, id in ipairs(ids) do
  if fields[i][1] == 'queued' and tostring(fields[i][2]) == gens[i] then release(id) end
end
redis.call('DEL', KEYS[1], KEYS[2])
return released
