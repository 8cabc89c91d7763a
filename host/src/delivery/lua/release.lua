-- Put a claimed firing back, due at once (shutdown). KEYS: leases, its
-- index, ready. ARGV: member.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[2], now, ARGV[1])
  ready(KEYS[3], tenant_of(ARGV[1]), now)
  return 1
end
return 0
