-- reserve: judge every check of one request and, if all pass, reserve on all of them.
-- KEYS: [1] the org's zset of live reservations, [2] this request's record, then per check one
--       key (budget 'b', credit 'c') or two (rate 'r': current window, previous window).
-- ARGV: [1] now ms, [2] deadline ms, [3] amount nano-USD, [4] request id, [5] record prefix,
--       [6] number of checks, [7] rate window ms, [8] record lifetime ms, [9] sweep batch,
--       then five per check: kind, then
--         b: limit, hard (1|0), expire_at ms (0: never), seed ('' unless rebuilt)
--         c: -, -, -, seed 'balance,total,version' ('' unless rebuilt)
--         r: limit, amount, -, -
-- Returns {2, i...} checks missing (rebuild and call again with seeds), {0, i, used, reserved,
-- retry ms} the first failing check, {1, remaining, reset ms, ...} per rate check, or {3} when
-- this request holds a reservation already.
local now, deadline, amount, rid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local n, window = tonumber(ARGV[6]), tonumber(ARGV[7])
local zset, rec = KEYS[1], KEYS[2]
-- A retried call (its first answer lost with a dropped connection) must not reserve twice.
if redis.call('EXISTS', rec) == 1 then return {3} end
sweep(zset, ARGV[5], now, tonumber(ARGV[9]))

local missing = {}
local k, a = 3, 10
for i = 1, n do
  local kind = ARGV[a]
  if kind == 'r' then
    k = k + 2
  else
    if redis.call('EXISTS', KEYS[k]) == 0 then
      if ARGV[a + 4] == '' then
        missing[#missing + 1] = i
      else
        seed(KEYS[k], kind, ARGV[a + 4], ARGV[a + 3], now)
      end
    end
    k = k + 1
  end
  a = a + 5
end
if #missing > 0 then return {2, unpack(missing)} end

local need = big(amount)
local elapsed = tonumber(now) % window
local rates = {}
k, a = 3, 10
for i = 1, n do
  local kind = ARGV[a]
  if kind == 'b' then
    if ARGV[a + 2] == '1' then
      local v = redis.call('HMGET', KEYS[k], 's', 'r')
      if above(plus(plus(big(v[1]), big(v[2])), need), big(ARGV[a + 1])) then
        return {0, i, v[1], v[2], 0}
      end
    end
    k = k + 1
  elseif kind == 'c' then
    local v = redis.call('HMGET', KEYS[k], 'b', 'r')
    if above(plus(big(v[2]), need), big(v[1])) then
      return {0, i, v[1], v[2], 0}
    end
    k = k + 1
  else
    local limit, want = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    local cur = tonumber(redis.call('GET', KEYS[k]) or '0')
    local prev = tonumber(redis.call('GET', KEYS[k + 1]) or '0')
    local used = prev * (window - elapsed) / window + cur
    if used + want > limit then
      local retry
      if want > limit then
        retry = -1
      elseif cur + want <= limit then
        retry = math.max(0, math.floor((window - elapsed) - (limit - cur - want) * window / prev) + 1)
      else
        retry = (window - elapsed) + math.max(0, math.floor(window - (limit - want) * window / cur) + 1)
      end
      return {0, i, tostring(math.floor(used)), '0', retry}
    end
    rates[#rates + 1] = math.floor(limit - used - want)
    rates[#rates + 1] = window - elapsed
    k = k + 2
  end
  a = a + 5
end

local held = {}
k, a = 3, 10
for i = 1, n do
  if ARGV[a] == 'r' then
    redis.call('INCRBY', KEYS[k], ARGV[a + 2])
    redis.call('PEXPIRE', KEYS[k], window * 2 + 1000)
    k = k + 2
  else
    redis.call('HINCRBY', KEYS[k], 'r', amount)
    held[#held + 1] = KEYS[k]
    held[#held + 1] = amount
    k = k + 1
  end
  a = a + 5
end
if #held > 0 then
  redis.call('HSET', rec, unpack(held))
  redis.call('PEXPIRE', rec, ARGV[8])
  redis.call('ZADD', zset, deadline, rid)
end
return {1, unpack(rates)}
