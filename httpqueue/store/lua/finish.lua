-- finish: after the attempts of one delivery message, release their places in
-- the topic's running set and feed the circuit breaker of each callback host:
-- a success closes it; a failure counts, and `threshold` failures in a row open
-- it for `cooldown` ms, doubled each time it opens again (up to `cooldown_max`).
-- The topic's own threshold and cooldown (config fields bth, bcd), when set, replace the
-- deployment's, which come in ARGV.
-- KEYS: running, breaker, config (one topic, one hash tag)
-- ARGV: now, threshold (0: no breaker), cooldown, cooldown_max, then per attempt: id, host, result (ok|fail|skip)
-- Returns {host, open_until, host, open_until, ...} for circuits that opened now.
local now, threshold = tonumber(ARGV[1]), tonumber(ARGV[2])
local cooldown, cooldown_max = tonumber(ARGV[3]), tonumber(ARGV[4])
local own = redis.call('HMGET', KEYS[3], 'bth', 'bcd')
if own[1] then threshold = tonumber(own[1]) end
if own[2] then cooldown = tonumber(own[2]) end
local opened = {}
for i = 5, #ARGV, 3 do
  local id, host, result = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  redis.call('ZREM', KEYS[1], id)
  if result == 'ok' then
    redis.call('HDEL', KEYS[2], 'f:' .. host, 'o:' .. host, 'p:' .. host, 'n:' .. host)
  elseif result == 'fail' and threshold > 0 then
    local fails = redis.call('HINCRBY', KEYS[2], 'f:' .. host, 1)
    redis.call('HDEL', KEYS[2], 'p:' .. host)
    local open = tonumber(redis.call('HGET', KEYS[2], 'o:' .. host) or false)
    if fails >= threshold and not (open and open > now) then
      local n = redis.call('HINCRBY', KEYS[2], 'n:' .. host, 1)
      local until_ms = now + math.min(cooldown * 2 ^ (n - 1), cooldown_max)
      redis.call('HSET', KEYS[2], 'o:' .. host, until_ms)
      opened[#opened + 1] = host
      opened[#opened + 1] = until_ms
    end
  end
end
return opened
