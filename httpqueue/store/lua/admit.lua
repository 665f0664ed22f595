-- admit: decide, for the claimed tasks of one delivery message, which may be
-- attempted now under their topic's controls, across all workers at once:
--   paused topic           -> 'held' (parked until resume, keeping its due time);
--   open circuit for host  -> 'open:<ms>' (until the circuit half-opens; then one
--                             probe attempt goes through, the others wait);
--   concurrency limit full -> 'wait:<ms>' (a short wait, then try again);
--   rate limit             -> 'slot:<ms>' (a reserved slot of the topic's GCRA
--                             schedule; the task comes back at that time and
--                             passes without taking another slot);
--   otherwise              -> 'go' (and the attempt joins the running set).
-- KEYS: config, running, rate, breaker (one topic, one hash tag)
-- ARGV: now, lease, wait, probe, then per task: id, host, slot ('' if none)
-- Returns {failure_callback or '', verdict, verdict, ...}.
local now, lease, wait, probe = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local cfg = redis.call('HMGET', KEYS[1], 'paused', 'rate', 'conc', 'fcb')
local out = {cfg[4] or ''}
local rate, conc = tonumber(cfg[2]), tonumber(cfg[3])
local running = 0
if conc then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  running = redis.call('ZCARD', KEYS[2])
end
local tat = 0
if rate and rate > 0 then tat = tonumber(redis.call('GET', KEYS[3]) or 0) end
for i = 5, #ARGV, 3 do
  local id, host, slot = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local verdict
  if cfg[1] == '1' then
    verdict = 'held'
  end
  local probe_host = false  -- this task would be its host's half-open probe, if it goes
  if not verdict then
    local open = tonumber(redis.call('HGET', KEYS[4], 'o:' .. host) or false)
    if open and open > now then
      verdict = 'open:' .. open
    elseif open then
      local probing = tonumber(redis.call('HGET', KEYS[4], 'p:' .. host) or false)
      if probing and probing > now then
        verdict = 'open:' .. math.min(probing, now + wait * 5)
      else
        probe_host = true
      end
    end
  end
  if not verdict and conc and running >= conc then
    verdict = 'wait:' .. (now + wait)
  end
  if not verdict and rate and rate > 0 and not (slot and slot <= now + 5) then
    local t = math.max(tat, now)
    tat = t + 1000 / rate
    if t > now + 1 then verdict = 'slot:' .. math.floor(t) end
  end
  if not verdict then
    verdict = 'go'
    -- the probe is reserved only by a task that goes: one turned away by the limits
    -- must not hold the host's probe window without making an attempt
    if probe_host then redis.call('HSET', KEYS[4], 'p:' .. host, now + probe) end
    if conc then
      redis.call('ZADD', KEYS[2], now + lease, id)
      running = running + 1
    end
  end
  out[#out + 1] = verdict
end
if rate and rate > 0 then
  redis.call('SET', KEYS[3], math.floor(tat), 'PX', math.floor(math.max(tat - now, 0) + 60000))
end
return out
