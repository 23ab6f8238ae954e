-- restore: put back reservations Redis lost (flushed, restarted without its data) while the
-- gateway that made them still runs their requests: their records, deadlines and holds.
-- KEYS: [1] the org's zset of live reservations.
-- ARGV: [1] "record_prefix record_ttl_ms settled_prefix", then one per reservation:
--       "request_id deadline_ms amount counter_key...".
-- A reservation whose record exists, or that was settled (its marker exists), is left alone. A
-- counter that survived keeps its holds as they are; one that is missing gets this hold in 'r',
-- which its rebuild keeps (see seed), so no request is admitted against budget this one holds.
-- Returns how many reservations were put back.
local h = {}
for part in string.gmatch(ARGV[1], '%S+') do h[#h + 1] = part end
local recprefix, ttl, doneprefix = h[1], h[2], h[3]
local restored = 0
for i = 2, #ARGV do
  local parts = {}
  for part in string.gmatch(ARGV[i], '%S+') do parts[#parts + 1] = part end
  local rid, deadline, amount = parts[1], parts[2], parts[3]
  local rec = recprefix .. rid
  if redis.call('EXISTS', rec) == 0 and redis.call('EXISTS', doneprefix .. rid) == 0 then
    local held = {}
    for j = 4, #parts do
      local key = parts[j]
      if redis.call('HEXISTS', key, 's') == 0 and redis.call('HEXISTS', key, 'b') == 0 then
        redis.call('HINCRBY', key, 'r', amount)
        if redis.call('PTTL', key) == -1 then redis.call('PEXPIRE', key, ttl) end
      end
      held[#held + 1] = key
      held[#held + 1] = amount
    end
    if #held > 0 then
      redis.call('HSET', rec, unpack(held))
      redis.call('PEXPIRE', rec, ttl)
      redis.call('ZADD', KEYS[1], deadline, rid)
      restored = restored + 1
    end
  end
end
return restored
