-- mirror_schedule: write a schedule's definition, as etcd holds it at one revision, into the
-- definitions hash and its next tick into the ticks zset (or remove both for a deletion),
-- unless a later revision is there already. The check and the writes are atomic, so every
-- node may mirror every etcd event, in any order.
-- KEYS: definitions hash, next-ticks zset (one hash tag)
-- ARGV: id, etcd revision, definition JSON ('' for a deletion), next tick ('' while paused)
-- Returns: 1 written, 0 a later revision was there (nothing written)
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local seen = tonumber(cjson.decode(old)['revision'] or 0) or 0
  if seen >= tonumber(ARGV[2]) then
    return 0
  end
end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] == '' then
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], tonumber(ARGV[4]), ARGV[1])
end
return 1
