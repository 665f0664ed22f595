-- purge: remove tasks whose retention has passed from one of a shard's sorted
-- sets scored by purge time ("done" or the dead letters), with their history,
-- and take them out of the per-state counts in the same step.
-- KEYS: done or dead, stats
-- ARGV: now, limit, task_prefix, history_prefix
-- Returns the number of tasks removed.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]), 'LIMIT', 0, tonumber(ARGV[2]))
local fields = read_tasks(ARGV[3], ids, 'st', 'tp')
for i, id in ipairs(ids) do
  local f = fields[i]
  if f[1] then move(KEYS[2], f[2], f[1], nil) end
  redis.call('DEL', ARGV[3] .. id)
  redis.pcall('DEL', ARGV[4] .. id)  -- a history list already moved or never made (see record)
  redis.call('ZREM', KEYS[1], id)
end
return #ids
