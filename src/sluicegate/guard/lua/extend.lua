-- extend: move a live reservation's deadline (a long stream still running).
-- KEYS: [1] the org's zset of live reservations, [2] the request's record.
-- ARGV: [1] the request id, [2] the new deadline ms, [3] the record's lifetime ms.
-- Returns 1, or 0 when the reservation is gone (settled, or reclaimed already).
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if redis.call('EXISTS', KEYS[2] .. ':u') == 1 then redis.call('PEXPIRE', KEYS[2] .. ':u', ARGV[3]) end
return 1
