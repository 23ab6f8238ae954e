-- read: current values of budget and credit counters, after reclaiming expired reservations.
-- KEYS: [1] the org's zset of live reservations, then the counters.
-- ARGV: [1] now ms, [2] record prefix, [3] sweep batch, then three per counter: kind ('b'|'c'),
--       expire_at ms, seed ('' unless rebuilt; "<value>@<misses>", see seed).
-- Returns {2, i...} counters missing (call again with seeds) or {1, used, reserved, ...}.
local now = ARGV[1]
sweep(KEYS[1], ARGV[2], now, tonumber(ARGV[3]))
local missing = {}
for i = 2, #KEYS do
  local a = 4 + (i - 2) * 3
  if not seeded(KEYS[i], ARGV[a]) then
    if ARGV[a + 2] == '' or not seed(KEYS[i], ARGV[a], ARGV[a + 2], ARGV[a + 1], now) then
      missing[#missing + 1] = i - 1
    end
  end
end
if #missing > 0 then return {2, unpack(missing)} end
local out = {1}
for i = 2, #KEYS do
  local a = 4 + (i - 2) * 3
  local v
  if ARGV[a] == 'b' then
    v = redis.call('HMGET', KEYS[i], 's', 'r')
  else
    v = redis.call('HMGET', KEYS[i], 'b', 'r')
  end
  out[#out + 1] = v[1]
  out[#out + 1] = v[2]
end
return out
