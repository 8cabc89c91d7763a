-- Finish a firing, optionally dead-lettering it. KEYS: leases, meta, the
-- tenant's dead letters, the space's set of tenants with dead letters.
-- ARGV: lease, dead-letter json or '', most dead letters kept (per tenant),
-- the tenant. Returns how
-- many of the oldest dead letters were trimmed to stay within the cap, or
-- -1 when the lease was no longer held (it ended and the reaper put the
-- firing back: it runs again, so it is not dead-lettered).
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return -1 end
redis.call('HDEL', KEYS[2], member_of(ARGV[1]))
if ARGV[2] ~= '' then
  local n = redis.call('LPUSH', KEYS[3], ARGV[2])
  redis.call('SADD', KEYS[4], ARGV[4])
  local cap = tonumber(ARGV[3])
  if n > cap then
    redis.call('LTRIM', KEYS[3], 0, cap - 1)
    return n - cap
  end
end
return 0
