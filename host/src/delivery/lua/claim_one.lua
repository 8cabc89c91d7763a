-- Claim due entries of one tenant in one slot's space (a Redis Cluster's
-- sweep, which picks the (slot, tenant) pairs from the hint buckets).
-- KEYS: the tenant's index, ready, leases, meta. ARGV: tenant, lead,
-- lease_ms, limit, fired prefix, fired ttl, claim token.
-- Returns {now, the tenant's next entry here or -1, the first lease end
-- here or -1, lease, due, meta, ...}.
local c = {
  ready = KEYS[2], meta = KEYS[4], lead = tonumber(ARGV[2]),
  lease_end = now + tonumber(ARGV[3]), fired = ARGV[5], fired_ttl = ARGV[6], token = ARGV[7],
  out = {now, -1, -1}, leases = {},
}
claim_from(c, ARGV[1], tonumber(ARGV[4]))
if #c.leases > 0 then redis.call('ZADD', KEYS[3], unpack(c.leases)) end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first > 0 then c.out[2] = tonumber(first[2]) end
local lease = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if #lease > 0 then c.out[3] = tonumber(lease[2]) end
return c.out
