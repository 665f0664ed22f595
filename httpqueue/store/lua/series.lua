-- series: add one delivery message's outcomes to the per-minute statistics of
-- one shard (the dashboard's throughput and lateness charts), and let the
-- minute expire after two hours. Runs in the same round trip as the settles.
-- KEYS: the minute's hash (hq:{shard}:series:<minute>)
-- ARGV: ttl_seconds, field, increment, field, increment, ...
for i = 2, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], tonumber(ARGV[i + 1]))
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
