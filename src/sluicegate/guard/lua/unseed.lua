-- unseed: make counters missing, to be rebuilt from the database when next used; the
-- reservations they hold stay. Each counts as a missed charge, so a rebuild under way starts
-- again (see seed): used for counters whose charges reached the database by another way than the
-- usage stream (settled by a gateway failing open), and by reconcile's repair.
-- KEYS: the counters. ARGV: [1] the lifetime ms of a missed-charges count, then per key its kind,
-- 'b' (a budget) or 'c' (the credit).
for i, key in ipairs(KEYS) do
  unseed(key, ARGV[i + 1], ARGV[1])
end
return #KEYS
