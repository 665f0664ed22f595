-- read: hand the next new entries of one shard's event stream to one exporter of a
-- consumer group, and count in the same step what the group missed, so that two
-- exporters reading at once never count a drop twice.
-- Entries are trimmed oldest first (XADD MAXLEN ~) and a group reads oldest first, so
-- when the stream's first entry is newer than the last one the group was handed, every
-- entry the group ever read has been trimmed, and the trimmed ones it never read number
-- entries-added - length - read: that is the group's exact total of dropped events.
-- KEYS: stream, counts hash (fields '<group>:read', '<group>:dropped')
-- ARGV: group, consumer, count
-- Returns {entries, dropped}: entries as XREADGROUP gives them for one stream (or {}).
local group = ARGV[1]
local function parse_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function older(a, b)  -- stream id a < b
  local am, as = parse_id(a)
  local bm, bs = parse_id(b)
  return am < bm or (am == bm and as < bs)
end
local function pairs_of(flat)
  local out = {}
  for i = 1, #flat, 2 do out[flat[i]] = flat[i + 1] end
  return out
end
local info = pairs_of(redis.call('XINFO', 'STREAM', KEYS[1]))
local last = '0-0'
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local fields = pairs_of(g)
  if fields['name'] == group then last = fields['last-delivered-id'] end
end
local read = tonumber(redis.call('HGET', KEYS[2], group .. ':read') or 0)
local first = info['first-entry']
local dropped = tonumber(redis.call('HGET', KEYS[2], group .. ':dropped') or 0)
if not first or older(last, first[1]) then
  local now_dropped = tonumber(info['entries-added']) - tonumber(info['length']) - read
  if now_dropped > dropped then
    dropped = now_dropped
    redis.call('HSET', KEYS[2], group .. ':dropped', dropped)
  end
end
local reply = redis.call('XREADGROUP', 'GROUP', group, ARGV[2], 'COUNT', tonumber(ARGV[3]), 'STREAMS', KEYS[1], '>')
local entries = {}
if reply and reply[1] then entries = reply[1][2] end
if #entries > 0 then redis.call('HINCRBY', KEYS[2], group .. ':read', #entries) end
return {entries, dropped}
