-- `expired` keyevents: claims the firing of each key no index holds, once
-- across hosts (a fired mark set with NX). An indexed key is left to the
-- sweeper, which claims fairly across tenants; if its entry says later
-- than now (its TTL was shortened unheard), it is made due now.
-- KEYS: ready, leases, meta, then each key followed by its index.
-- ARGV: lease_ms, fired prefix, fired ttl. Returns {member, due, meta, ...}
-- for the firings claimed.
local out = {}
for i = 4, #KEYS, 2 do
  local k = KEYS[i]
  local s = redis.call('ZSCORE', KEYS[i + 1], k)
  if s then
    if tonumber(s) > now and redis.call('EXISTS', k) == 0 then
      redis.call('ZADD', KEYS[i + 1], now, k)
      ready(KEYS[1], tenant_of(k), now)
    end
  elseif redis.call('SET', ARGV[2] .. k, '1', 'NX', 'PX', ARGV[3]) then
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), k)
    out[#out + 1] = k
    out[#out + 1] = tostring(now)
    out[#out + 1] = redis.call('HGET', KEYS[3], k) or ''
  end
end
return out
