-- epoch: the marker of the data this Redis holds, "<token> <created ms>", made when missing
-- (this Redis is new, or lost its data). A gateway that finds another token than it saw before
-- puts back the reservations it holds (restore.lua); a rebuild of a counter waits until every
-- gateway has had the time to (see RedisGuardStore).
-- KEYS: [1] the marker. ARGV: [1] the token of a new marker.
-- Returns {token, created ms, now ms}, times by this Redis's clock.
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local value = redis.call('GET', KEYS[1])
if not value then
  value = ARGV[1] .. ' ' .. now
  redis.call('SET', KEYS[1], value)
end
local token, created = string.match(value, '^(%S+) (%d+)$')
return {token, created, now}
