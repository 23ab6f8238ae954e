-- reserve: judge every check of one request and, if all pass, reserve on all of them.
-- KEYS: [1] the org's zset of live reservations, [2] this request's record, then per check one
--       key (budget, credit) or two (rate: current window, previous window).
-- ARGV: [1] "now_ms deadline_ms amount request_id record_prefix window_ms record_ttl_ms
--            sweep_batch tokens"
--       [2] the checks, space-separated: "b,<limit>,<hard 1|0>,<expire_at ms, 0: never>",
--           "c" (credit), "r,<limit>,<per token 1|0>"
--       [3] seeds of rebuilt counters: "<check index>=<spent>@<misses>" or
--           "<i>=<balance>,<total>,<n>@<misses>" (see seed)
-- Returns {2, i...} checks missing (rebuild and call again with seeds), {0, i, used, reserved,
-- retry ms} the first failing check, {1, remaining, reset ms, ...} per rate check, or {3} when
-- this request holds a reservation already.
local h = {}
for part in string.gmatch(ARGV[1], '%S+') do h[#h + 1] = part end
local now, deadline, amount, rid, recprefix = h[1], h[2], h[3], h[4], h[5]
local window, keep, tokens = tonumber(h[6]), h[7], h[9]
local zset, rec = KEYS[1], KEYS[2]
-- A retried call (its first answer lost with a dropped connection) must not reserve twice.
if redis.call('EXISTS', rec) == 1 then return {3} end
sweep(zset, recprefix, now, tonumber(h[8]))

local checks = {}
for part in string.gmatch(ARGV[2], '%S+') do
  local kind, a, b, c = string.match(part, '^(%a),?([^,]*),?([^,]*),?([^,]*)$')
  checks[#checks + 1] = {kind, a, b, c}
end
local seeds = {}
if ARGV[3] then
  for i, value in string.gmatch(ARGV[3], '(%d+)=(%S+)') do seeds[tonumber(i)] = value end
end

local missing = {}
local k = 3
for i, check in ipairs(checks) do
  if check[1] == 'r' then
    k = k + 2
  else
    if not seeded(KEYS[k], check[1]) then
      if not (seeds[i] and seed(KEYS[k], check[1], seeds[i], check[4] or '0', now)) then
        missing[#missing + 1] = i
      end
    end
    k = k + 1
  end
end
if #missing > 0 then return {2, unpack(missing)} end

local need = big(amount)
local elapsed = tonumber(now) % window
local rates = {}
k = 3
for i, check in ipairs(checks) do
  local kind = check[1]
  if kind == 'b' then
    if check[3] == '1' then
      local v = redis.call('HMGET', KEYS[k], 's', 'r')
      if above(plus(plus(big(v[1]), big(v[2])), need), big(check[2])) then
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
    local limit = tonumber(check[2])
    local want = 1
    if check[3] == '1' then want = tonumber(tokens) end
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
      -- Rounded up, as the in-process store: the remaining it implies is less than `want`.
      return {0, i, tostring(math.ceil(used)), '0', retry}
    end
    rates[#rates + 1] = math.floor(limit - used - want)
    rates[#rates + 1] = window - elapsed
    k = k + 2
  end
end

local held = {}
k = 3
for _, check in ipairs(checks) do
  if check[1] == 'r' then
    local want = 1
    if check[3] == '1' then want = tokens end
    redis.call('INCRBY', KEYS[k], want)
    redis.call('PEXPIRE', KEYS[k], window * 2 + 1000)
    k = k + 2
  else
    redis.call('HINCRBY', KEYS[k], 'r', amount)
    held[#held + 1] = KEYS[k]
    held[#held + 1] = amount
    k = k + 1
  end
end
if #held > 0 then
  redis.call('HSET', rec, unpack(held))
  redis.call('PEXPIRE', rec, keep)
  redis.call('ZADD', zset, deadline, rid)
end
return {1, unpack(rates)}
