-- settle: release a request's reservation and charge its actual cost, once per request id.
-- KEYS: [1] the org's zset of live reservations, [2] the request's record, [3] its settled
--       marker, then the charged counters (budgets, then the credit last), then the tpm windows
--       the request reserved tokens in.
--       With a usage event, the org's usage stream is the last key.
-- ARGV: [1] "request_id cost charged_count token_delta marker_ttl_ms has_event drain_group":
--       cost in nano-USD, token_delta = actual minus reserved tokens, has_event 1 when [2] is the
--       usage event to append to the stream (in this same atomic step: settled <=> logged), 2
--       when the event is in the database already (written there while Redis could not be
--       reached): the charged counters are then made missing instead (see unseed).
--       [3] the budgets' alert thresholds, "i,percent,amount,label" separated by spaces: i the
--       budget's position among the charged counters, amount in nano-USD, label
--       "budget/subject/period start". Spend going from below an amount to at or above it
--       crosses that threshold; only this request can, as the step is atomic.
-- Returns {1, crossing...} (each "label/percent/spent"), {2, crossing...} the same when the
-- stream was missing (new, or lost with Redis's data) and was created with the drain's consumer
-- group (the caller registers it for the drain), or {0} when the request was settled already
-- (nothing changes, nothing is appended). The crossings are appended with the usage event as its
-- field `x`, so an alert is logged exactly when its request is.
local h = {}
for part in string.gmatch(ARGV[1], '%S+') do h[#h + 1] = part end
local rid, cost, charged, delta = h[1], h[2], tonumber(h[3]), h[4]
if redis.call('EXISTS', KEYS[3]) == 1 then return {0} end
redis.call('SET', KEYS[3], '1', 'PX', h[5])
local windows_end = #KEYS
if h[6] == '1' then windows_end = #KEYS - 1 end
local held = redis.call('HGETALL', KEYS[2])
for i = 1, #held, 2 do
  release(held[i], held[i + 1])
end
redis.call('DEL', KEYS[2], KEYS[2] .. ':u')
redis.call('ZREM', KEYS[1], rid)

local watched = {}
if ARGV[3] and ARGV[3] ~= '' then
  for i, pct, amount, label in string.gmatch(ARGV[3], '(%d+),(%d+),(%d+),(%S+)') do
    local index = tonumber(i)
    watched[index] = watched[index] or {}
    table.insert(watched[index], {pct, big(amount), label})
  end
end

-- A counter that is missing (expired, flushed) is not recreated here: it is rebuilt from the
-- database and the usage stream, which hold this request's cost once it is logged below; the
-- charge is counted as missed, so a rebuild that began before it starts again.
local crossed = {}
if cost ~= '0' then
  local charge = big(cost)
  for i = 1, charged do
    local key = KEYS[3 + i]
    local kind = 'b'
    if i == charged then kind = 'c' end
    if h[6] == '2' then
      unseed(key, kind, h[5])
    elseif not seeded(key, kind) then
      missed(key, h[5])
    else
      if i == charged then
        redis.call('HINCRBY', key, 'b', negated(cost))
      else
        redis.call('HINCRBY', key, 's', cost)
        if watched[i] then
          local spent_text = redis.call('HGET', key, 's')
          local spent = big(spent_text)
          for _, t in ipairs(watched[i]) do
            -- before < amount <= after, with before = after - cost: amount + cost > after.
            if not above(t[2], spent) and above(plus(t[2], charge), spent) then
              crossed[#crossed + 1] = t[3] .. '/' .. t[1] .. '/' .. spent_text
            end
          end
        end
      end
    end
  end
end
if delta ~= '0' then
  for i = 4 + charged, windows_end do
    if redis.call('EXISTS', KEYS[i]) == 1 then
      if redis.call('INCRBY', KEYS[i], delta) < 0 then redis.call('SET', KEYS[i], 0, 'KEEPTTL') end
    end
  end
end
local status = 1
if h[6] == '1' then
  if redis.call('EXISTS', KEYS[#KEYS]) == 0 then
    redis.call('XGROUP', 'CREATE', KEYS[#KEYS], h[7], '0', 'MKSTREAM')
    status = 2
  end
  if #crossed > 0 then
    redis.call('XADD', KEYS[#KEYS], '*', 'e', ARGV[2], 'x', table.concat(crossed, ' '))
  else
    redis.call('XADD', KEYS[#KEYS], '*', 'e', ARGV[2])
  end
end
local answer = {status}
for _, c in ipairs(crossed) do answer[#answer + 1] = c end
return answer
