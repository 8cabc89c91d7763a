-- SET with PX (quietly: no `expire` event) and index, unless the tenant's
-- index holds `max_pending` entries already (0: no cap) and this arming
-- would add one (the prelude's `adds_entry`).
-- KEYS: key, its index, ready. ARGV: value, ttl_ms, max_pending. Returns
-- the due time, or -1 when refused.
local max = tonumber(ARGV[3])
if max > 0 and adds_entry(KEYS[1], KEYS[2], now)
    and redis.call('ZCARD', KEYS[2]) >= max then
  return -1
end
keep_due_firing(KEYS[3], KEYS[1], KEYS[2], now)
local at = now + tonumber(ARGV[2])
set_quietly(KEYS[3], KEYS[1], ARGV[1], at)
redis.call('ZADD', KEYS[2], at, KEYS[1])
ready(KEYS[3], tenant_of(KEYS[1]), at)
return at
