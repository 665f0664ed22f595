-- orphans: hand out again what a worker incarnation held in one shard, when it died (its
-- heartbeat stopped) or stopped cleanly, so the next reclaim re-issues it now instead of
-- when its lease runs out. Two kinds of entries share the owned set:
--  * attempts it started (claim.lua): released only if still delivering under that owner
--    (a settled task, or one re-issued and claimed by another worker since, is left alone),
--    and only when `attempts` is '1' (a worker that stops cleanly has finished its own);
--  * tasks whose delivery message it held, not yet due (hold.lua): released if still queued.
--    If another worker holds a newer message of the task (it was re-issued), that message
--    goes stale and a new one is sent: one message more, never a second delivery.
-- A released task's in-flight score becomes `now`, and reclaim then bumps its generation,
-- so a late result or message of the incarnation is refused as stale. The owned set is
-- deleted: the incarnation is gone.
-- KEYS: owned set of (shard, incarnation), inflight of the same shard
-- ARGV: now, incarnation, task_prefix, attempts ('1' or '0')
-- Returns the number of tasks released.
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local fields = read_tasks(ARGV[3], ids, 'st', 'ow')
local attempts = ARGV[4] ~= '0'
local released = 0
for i, id in ipairs(ids) do
  local f = fields[i]
  local mine = (f[1] == 'delivering' and attempts and f[2] == ARGV[2]) or f[1] == 'queued'
  if mine and redis.call('ZSCORE', KEYS[2], id) then
    redis.call('ZADD', KEYS[2], ARGV[1], id)
    released = released + 1
  end
end
redis.call('DEL', KEYS[1])
return released
