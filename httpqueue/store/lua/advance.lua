-- advance: move a schedule's next tick from the one just handled to the next, unless another
-- worker already did (compare-and-set on the sorted set's score).
-- KEYS: next-ticks zset; ARGV: id, handled tick, next tick
local current = redis.call('ZSCORE', KEYS[1], ARGV[1])
if current and tonumber(current) == tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], tonumber(ARGV[3]), ARGV[1])
  return 1
end
return 0
