-- Put a claimed firing back at its due time (the prelude's `requeue`), so
-- it is due at once (shutdown). KEYS: leases, its index, ready. ARGV: lease.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  local back, due = requeue(ARGV[1])
  redis.call('ZADD', KEYS[2], due, back)
  ready(KEYS[3], tenant_of(ARGV[1]), due)
  return 1
end
return 0
