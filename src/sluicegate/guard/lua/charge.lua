-- charge: add charges settled while Redis could not be reached (by a gateway failing open) to
-- the counters they were counted on. KEYS: the counters (one org's).
-- ARGV: [1] the lifetime ms of a missed-charges count, then per key "<kind> <nano-USD>", kind 'b'
--       (a budget: spend grows) or 'c' (the credit: the balance shrinks).
-- A missing counter is left to its rebuild from the database, which holds those requests' usage;
-- the charge is counted as missed, so a rebuild under way starts again (see seed).
for i, key in ipairs(KEYS) do
  local kind, amount = string.match(ARGV[i + 1], '^(%a) (%d+)$')
  if not seeded(key, kind) then
    missed(key, ARGV[1])
  elseif kind == 'b' then
    redis.call('HINCRBY', key, 's', amount)
  else
    redis.call('HINCRBY', key, 'b', negated(amount))
  end
end
return #KEYS
