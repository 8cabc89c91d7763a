-- `expired` keyevents: claims the firing of each key no index holds, once
-- across hosts (a fired mark set with NX). An indexed key is left to the
-- sweeper, which claims fairly across tenants; if its entry says later
-- than now (its TTL was shortened unheard), it is made due now.
-- KEYS: ready, leases, meta, then each key followed by its index.
-- ARGV: lease_ms, fired prefix, fired ttl, claim token. Returns {lease,
-- due (-1: unknown), meta, ...} for the firings claimed (the lease: the key and a claim
-- token, as the prelude's `claim_take` names it).
local out = {}
for i = 4, #KEYS, 2 do
  local k = KEYS[i]
  local s = redis.call('ZSCORE', KEYS[i + 1], k)
  if s then
    -- Unless the key has a fired mark: then this event is an earlier
    -- arming's (its firing was claimed, or kept apart when the key was
    -- armed again), and the key was deleted since (its `del` event comes
    -- later), not expired early.
    if tonumber(s) > now and redis.call('EXISTS', k) == 0
        and redis.call('EXISTS', ARGV[2] .. k) == 0 then
      redis.call('ZADD', KEYS[i + 1], now, k)
      ready(KEYS[1], tenant_of(k), now)
    end
  elseif redis.call('SET', ARGV[2] .. k, '1', 'NX', 'PX', ARGV[3]) then
    local lease = k .. '\0@' .. ARGV[4] .. '.' .. (#out / 3) .. ':' .. now
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), lease)
    out[#out + 1] = lease
    -- Its due time is unknown (it was never indexed): -1, not now, so its
    -- lateness is reported as unknown rather than as none.
    out[#out + 1] = '-1'
    out[#out + 1] = redis.call('HGET', KEYS[3], k) or ''
  end
end
return out
