-- Schedule a retry. KEYS: leases, its index, meta, ready. ARGV: lease, new
-- member, delay_ms, meta json. Returns the retry's due time, or -1 when
-- the lease was no longer held (the reaper put the firing back: it runs
-- again as it is, so no retry is added beside it).
local at = now + tonumber(ARGV[3])
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return -1 end
redis.call('HDEL', KEYS[3], member_of(ARGV[1]))
redis.call('ZADD', KEYS[2], at, ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
ready(KEYS[4], tenant_of(ARGV[2]), at)
return at
