-- sync_credit: fold committed top-ups and adjustments into the credit counter exactly once.
-- KEYS: [1] the credit counter. ARGV: [1] total of non-usage ledger entries, [2] their count.
-- Applied only when the count is newer than what the counter has seen, so concurrent or repeated
-- calls converge on the ledger. A missing counter stays missing: it is rebuilt when needed.
if not seeded(KEYS[1], 'c') then return 0 end
local seen = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if tonumber(ARGV[2]) <= seen then return 0 end
local total = redis.call('HGET', KEYS[1], 't') or '0'
redis.call('HINCRBY', KEYS[1], 'b', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'b', negated(total))
redis.call('HSET', KEYS[1], 't', ARGV[1], 'v', ARGV[2])
return 1
