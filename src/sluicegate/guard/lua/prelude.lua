-- Shared by every script of the counter store (prepended when the scripts are loaded).
--
-- Money is int64 nano-USD, but Lua numbers are doubles (exact only below 2^53, about 9 million
-- USD). Comparisons therefore split a value into two exact limbs of 1e9; additions to stored
-- values use HINCRBY, which is exact int64 arithmetic in Redis itself.
local LIMB = 1000000000

local function big(s)
  if not s then return {0, 0} end
  local neg = string.sub(s, 1, 1) == '-'
  if neg then s = string.sub(s, 2) end
  local n = string.len(s)
  local hi, lo = 0, 0
  if n > 9 then
    hi = tonumber(string.sub(s, 1, n - 9))
    lo = tonumber(string.sub(s, n - 8))
  else
    lo = tonumber(s)
  end
  if neg then
    if lo == 0 then return {-hi, 0} end
    return {-hi - 1, LIMB - lo}
  end
  return {hi, lo}
end

local function plus(a, b)
  local hi, lo = a[1] + b[1], a[2] + b[2]
  if lo >= LIMB then return {hi + 1, lo - LIMB} end
  return {hi, lo}
end

local function above(a, b)
  return a[1] > b[1] or (a[1] == b[1] and a[2] > b[2])
end

local function negated(s)
  if string.sub(s, 1, 1) == '-' then return string.sub(s, 2) end
  if s == '0' then return s end
  return '-' .. s
end

-- Give back `amount` held on a counter. A counter rebuilt while reservations were live (its
-- budget deleted and made again, credit enforcement turned on) never held them: never below 0.
local function release(key, amount)
  if redis.call('EXISTS', key) == 1 then
    if redis.call('HINCRBY', key, 'r', negated(amount)) < 0 then
      redis.call('HSET', key, 'r', 0)
    end
  end
end

-- Give back what expired reservations of this org still hold (a request that never settled).
-- Record keys are "<recprefix><request id>"; a record maps counter keys to amounts.
local function sweep(zset, recprefix, now, batch)
  local due = redis.call('ZRANGEBYSCORE', zset, '-inf', now, 'LIMIT', 0, batch)
  for _, rid in ipairs(due) do
    local rec = recprefix .. rid
    local held = redis.call('HGETALL', rec)
    for i = 1, #held, 2 do
      release(held[i], held[i + 1])
    end
    redis.call('DEL', rec)
    redis.call('ZREM', zset, rid)
  end
end

-- Create a missing budget ('b') or credit ('c') counter from its rebuilt value. Never
-- overwrites: the caller checked that it is missing in this same script.
local function seed(key, kind, value, expire_at, now)
  if kind == 'b' then
    redis.call('HSET', key, 's', value, 'r', 0)
    if expire_at ~= '0' then
      redis.call('PEXPIRE', key, math.max(tonumber(expire_at) - tonumber(now), 1000))
    end
  else
    local b, t, v = string.match(value, '^(-?%d+),(-?%d+),(%d+)$')
    redis.call('HSET', key, 'b', b, 't', t, 'v', v, 'r', 0)
  end
end
