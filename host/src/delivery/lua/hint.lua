-- A hint bucket learns of work (arming, retries, leases, ...): each member
-- is lowered to its score (or added), and gets a new version, so an update
-- a claim computed before this one (`hint_cas`) no longer applies.
-- KEYS: hints (or lease hints), versions. ARGV: member, score, ...
for i = 1, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], 'LT', ARGV[i + 1], ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], redis.call('HINCRBY', KEYS[2], 'seq', 1))
end
return #ARGV / 2
