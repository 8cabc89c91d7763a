-- A hint bucket learns of work (arming, retries, leases, ...): each member
-- is lowered to its score (or added), and gets a new version, so an update
-- a claim computed before this one (`hint_cas`) no longer applies.
-- KEYS: hints (or lease hints), versions, and for tenant hints the
-- bucket's tenants (each pair is then also lowered in `{hints}:{tenant}`,
-- and its tenant in the tenants set). ARGV: member, score, ...
for i = 1, #ARGV, 2 do
  local m, score = ARGV[i], ARGV[i + 1]
  redis.call('ZADD', KEYS[1], 'LT', score, m)
  redis.call('HSET', KEYS[2], m, redis.call('HINCRBY', KEYS[2], 'seq', 1))
  if KEYS[3] then
    local tenant = hint_tenant(m)
    redis.call('ZADD', KEYS[1] .. ':' .. tenant, 'LT', score, m)
    redis.call('ZADD', KEYS[3], 'LT', score, tenant)
  end
end
return #ARGV / 2
