-- hold: note that a worker incarnation holds delivery messages of these tasks that are not
-- due yet (with the Redis broker, Celery keeps such ETA messages in the worker's memory
-- until they are due). If the worker dies, or stops, before they are due, orphans.lua
-- then hands those tasks out again at once instead of when their lease runs out. Each
-- entry names the message's generation: only a task still queued under it is released.
-- KEYS: holding set of (shard, incarnation)
-- ARGV: now, then per task: score (its due + lease: when the entry is useless), entry (id|generation)
local now = tonumber(ARGV[1])
local last = now
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1])
  last = math.max(last, tonumber(ARGV[i]))
end
local keep = last - now + 60000
if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
return (#ARGV - 1) / 2
