-- orphans: release the attempts a dead worker incarnation held in one shard, so the
-- next reclaim re-issues them now instead of when their lease runs out. An attempt
-- is released only if it is still delivering under that owner (a settled task, or one
-- re-issued and claimed by another worker since, is left alone); its in-flight score
-- becomes `now`, and reclaim then bumps the generation, so a late result of the dead
-- incarnation is refused as stale. The owned set is deleted: the incarnation is gone.
-- KEYS: owned set of (shard, incarnation), inflight of the same shard
-- ARGV: now, incarnation, task_prefix
-- Returns the number of attempts released.
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local fields = read_tasks(ARGV[3], ids, 'st', 'ow')
local released = 0
for i, id in ipairs(ids) do
  local f = fields[i]
  if f[1] == 'delivering' and f[2] == ARGV[2] and redis.call('ZSCORE', KEYS[2], id) then
    redis.call('ZADD', KEYS[2], ARGV[1], id)
    released = released + 1
  end
end
redis.call('DEL', KEYS[1])
return released
