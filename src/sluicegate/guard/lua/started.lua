-- started: a stream's upstream answered and its first bytes went out to the client. Should the
-- gateway relaying it die before settling it, the sweep bills this usage event (what is known:
-- the prompt, which the provider processed) when the reservation expires (prelude `bill_lost`).
-- KEYS: [1] the request's reservation record.
-- ARGV: [1] the usage event, [2] its cost in nano-USD, [3] the org's usage stream, [4] the
--       drain's consumer group, [5] how long a settled marker lives (ms), [6] the request's
--       settled marker.
-- Returns 1, or 0 when the reservation is gone (settled already, or reclaimed).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local lost = KEYS[1] .. ':u'
redis.call('HSET', lost, 'e', ARGV[1], 'c', ARGV[2], 's', ARGV[3], 'g', ARGV[4], 't', ARGV[5], 'd', ARGV[6])
redis.call('PEXPIRE', lost, redis.call('PTTL', KEYS[1]))
return 1
