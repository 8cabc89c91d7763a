-- Schedule a retry. KEYS: leases, its index, meta, ready. ARGV: member, new
-- member, delay_ms, meta json.
local at = now + tonumber(ARGV[3])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[2], at, ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
ready(KEYS[4], tenant_of(ARGV[2]), at)
return at
