-- hold: note that a worker incarnation holds delivery messages of these tasks that are not
-- due yet (with the Redis broker, Celery keeps such ETA messages in the worker's memory
-- until they are due). If the worker dies, or stops, before they are due, orphans.lua
-- then hands those tasks out again at once instead of when their lease runs out. The
-- entries share the owned set with the incarnation's attempts (claim.lua): a task that is
-- claimed later just gets its attempt's score.
-- KEYS: owned set of (shard, incarnation)
-- ARGV: now, score, id, score, id, ... (score: when the entry is useless: the task's due + lease)
local now = tonumber(ARGV[1])
local last = now
for i = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1])
  last = math.max(last, tonumber(ARGV[i]))
end
local keep = last - now + 60000
if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
return (#ARGV - 1) / 2
