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

-- A budget counter ('b') holds its spend in 's', a credit counter ('c') its balance in 'b'; a
-- counter without that field is missing (never built, expired, or lost with Redis's data), even
-- if its hash exists: reservations put back after a loss ('r', see restore.lua) and the count of
-- charges it missed ('m') wait there until it is rebuilt.
local function seeded(key, kind)
  if kind == 'b' then return redis.call('HEXISTS', key, 's') == 1 end
  return redis.call('HEXISTS', key, 'b') == 1
end

-- A charge for a counter that is missing: it cannot be added, so it is counted in 'm'. Whoever
-- is rebuilding the counter from the database and the usage stream read 'm' before it started;
-- a seed made before this charge was logged would miss it, and is refused (see seed).
local function missed(key, ttl)
  redis.call('HINCRBY', key, 'm', 1)
  if redis.call('PTTL', key) == -1 then redis.call('PEXPIRE', key, ttl) end
end

-- A charge that reached the database by another way than the usage stream (its gateway could not
-- reach Redis when it settled): a seed made since may hold it or not, so the counter is made
-- missing, to be rebuilt from the database that holds it now, and the charge counted as missed,
-- so a rebuild under way starts again. Reservations ('r') stay.
local function unseed(key, kind, ttl)
  if kind == 'b' then
    redis.call('HDEL', key, 's')
  else
    redis.call('HDEL', key, 'b', 't', 'v')
  end
  missed(key, ttl)
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

-- A stream whose gateway died before settling it (started.lua left its usage event beside the
-- record): bill what is known, the event's cost on the counters the request held, its event
-- appended to the org's usage stream, and the request marked settled.
local function bill_lost(rec, held)
  local lost = redis.call('HMGET', rec .. ':u', 'e', 'c', 's', 'g', 't', 'd')
  if not lost[1] then return end
  if lost[2] ~= '0' then
    for i = 1, #held, 2 do
      local key = held[i]
      if redis.call('HEXISTS', key, 's') == 1 then
        redis.call('HINCRBY', key, 's', lost[2])
      elseif redis.call('HEXISTS', key, 'b') == 1 then
        redis.call('HINCRBY', key, 'b', negated(lost[2]))
      else
        missed(key, lost[5])
      end
    end
  end
  if redis.call('EXISTS', lost[3]) == 0 then
    redis.call('XGROUP', 'CREATE', lost[3], lost[4], '0', 'MKSTREAM')
  end
  redis.call('XADD', lost[3], '*', 'e', lost[1])
  redis.call('SET', lost[6], '1', 'PX', lost[5])
  redis.call('DEL', rec .. ':u')
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
    bill_lost(rec, held)
    redis.call('DEL', rec)
    redis.call('ZREM', zset, rid)
  end
end

-- Create a missing budget ('b') or credit ('c') counter from its rebuilt value,
-- "<value>@<misses>": applied only if no charge was missed since the rebuild began (the 'm'
-- it read then is still the count), else false and the caller rebuilds again. Keeps the
-- reservations ('r') the hash holds. Never overwrites: the caller checked that it is missing in
-- this same script.
local function seed(key, kind, value, expire_at, now)
  local v, misses = string.match(value, '^(.-)@(%d+)$')
  if tonumber(redis.call('HGET', key, 'm') or '0') ~= tonumber(misses) then return false end
  redis.call('HDEL', key, 'm')
  if kind == 'b' then
    redis.call('HSET', key, 's', v)
    if expire_at ~= '0' then
      redis.call('PEXPIRE', key, math.max(tonumber(expire_at) - tonumber(now), 1000))
    else
      redis.call('PERSIST', key)
    end
  else
    local b, t, n = string.match(v, '^(-?%d+),(-?%d+),(%d+)$')
    redis.call('HSET', key, 'b', b, 't', t, 'v', n)
    redis.call('PERSIST', key)
  end
  return true
end
