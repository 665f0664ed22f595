-- trim: remove the entries of one shard's event stream that every consumer group (every
-- sink) has been handed and has acknowledged, so the stream holds what some sink still
-- needs rather than always MAXLEN entries. Computed and applied in one step: groups only
-- move forward, so nothing below the smallest position is ever needed again.
-- KEYS: stream
-- Returns the number of entries removed.
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local function parse_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function older(a, b)
  local am, as = parse_id(a)
  local bm, bs = parse_id(b)
  return am < bm or (am == bm and as < bs)
end
local floor = nil
for _, g in ipairs(groups) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  local keep
  if tonumber(f['pending']) > 0 then
    keep = redis.call('XPENDING', KEYS[1], f['name'])[2]  -- the oldest entry not yet acknowledged
  else
    local ms, seq = parse_id(f['last-delivered-id'])
    keep = string.format('%.0f-%.0f', ms, seq + 1)  -- everything handed out is acknowledged
  end
  if floor == nil or older(keep, floor) then floor = keep end
end
return redis.call('XTRIM', KEYS[1], 'MINID', '~', floor)
