-- mirror_topic: write a topic's settings, as etcd holds them at one revision, into the topic's
-- config hash (what admit.lua reads), unless a later revision is there already. The check and
-- the writes are atomic, so every node may mirror every etcd event, in any order, and the
-- hash ends with the newest settings.
-- KEYS: config hash of the topic
-- ARGV: etcd revision, topic name, paused ('1' or '0'), rate, conc, fcb, bth, bcd ('' clears a setting)
-- Returns: -1 when a later revision was there (nothing written), else 1 if the topic was
-- paused before and is not now (its held tasks must go back to the timer), else 0.
local seen = tonumber(redis.call('HGET', KEYS[1], 'erev') or '0')
local rev = tonumber(ARGV[1])
if seen >= rev then
  return -1
end
local was_paused = redis.call('HGET', KEYS[1], 'paused') == '1'
redis.call('HSET', KEYS[1], 'erev', ARGV[1], 'name', ARGV[2], 'paused', ARGV[3])
local fields = {'rate', 'conc', 'fcb', 'bth', 'bcd'}
for i, field in ipairs(fields) do
  local value = ARGV[3 + i]
  if value == '' then
    redis.call('HDEL', KEYS[1], field)
  else
    redis.call('HSET', KEYS[1], field, value)
  end
end
if was_paused and ARGV[3] ~= '1' then
  return 1
end
return 0
